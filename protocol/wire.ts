/** The peer wire: see protocol/wire/ (this path stays so that imports of it need not change). */
export * from './wire/index.js'
