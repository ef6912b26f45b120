/** statecast: the client library for local servers. */
export { StatecastClient } from './client.js'
export type { ClientOptions, CallOptions, GetOptions, SetOptions, GetResult, Key } from './client.js'
export { StatecastError } from './errors.js'
export type { ClientErrorCode } from './errors.js'
export { defaultSocketPath, defaultAdminSocketPath } from '../protocol/paths.js'
