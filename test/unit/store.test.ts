import { LruStore as Store } from '../../daemon/store/lru-store.js'
import { storeBehaviour } from '../helpers/store-behaviour.js'

storeBehaviour(Store)
