/** The network-namespace lab lives with the benchmarks (the scale case uses it too). */
export { NetLab } from './netlab.js'
