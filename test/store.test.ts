import { Store } from '../daemon/store.js'
import { storeBehaviour } from './helpers/store-behaviour.js'

storeBehaviour(Store)
