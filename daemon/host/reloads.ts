/**
 * SIGHUP reloads, one at a time and none lost (issue 21 point 12): a SIGHUP that came while a
 * reload ran was dropped, so a config written and signalled during a reload never took effect
 * until the next SIGHUP. Now a request during a run makes exactly one more run after it (any
 * number of requests meanwhile fold into that one: it reads the file as it is then, which is
 * what each of them asked for).
 */
export class Reloads {
  readonly #run: () => Promise<void>
  #running = false
  #again = false
  /** Runs made (for tests and logs). */
  runs = 0
  #idle: Promise<void> = Promise.resolve()

  /** `run` must not reject (it logs its own failure); a rejection is swallowed. */
  constructor(run: () => Promise<void>) {
    this.#run = run
  }

  /** Asks for a reload: now if none runs, else once more after the one running. */
  request(): void {
    if (this.#running) {
      this.#again = true
      return
    }
    this.#running = true
    this.#idle = this.#loop()
  }

  /** Resolves once no reload runs and none is asked for. */
  idle(): Promise<void> {
    return this.#idle
  }

  async #loop(): Promise<void> {
    try {
      do {
        this.#again = false
        this.runs++
        try {
          await this.#run()
        } catch {
          /* run logs its own failures */
        }
      } while (this.#again)
    } finally {
      this.#running = false
    }
  }
}
