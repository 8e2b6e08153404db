//! How a thread serves the GPU's queues, for both shapes (the in-process device thread's
//! `QueueWorker` and the vhost-user backend's vring worker): bounded steps (a queue's worth of
//! chains and a few slices of data work at most, the device's lock released in between), with
//! a look at the stop condition between steps, and a short poll for more work after each one.

use std::time::{Duration, Instant};

/// How long a thread keeps polling for the next request after a step before it goes back to
/// sleep on its notify eventfd. A sleeping thread takes tens of microseconds to wake on this
/// host, ten times the cost of the notify itself, so a driver issuing commands back to back is
/// served by polling instead. The window is short, so an idle guest costs no host CPU.
pub const POLL_WINDOW: Duration = Duration::from_micros(200);

/// Serves a queue in bounded steps until no work has come for [`POLL_WINDOW`] or `stop()`
/// says so (looked at before every step and while polling, so a long command never keeps the
/// thread past it). `step()` does one bounded step and returns whether to go on (`false`: the
/// queue cannot be served now); `pending()` says whether work is waiting (a command in
/// flight, or requests not taken yet).
pub fn serve<E>(
    stop: impl Fn() -> bool,
    mut step: impl FnMut() -> Result<bool, E>,
    mut pending: impl FnMut() -> bool,
) -> Result<(), E> {
    while !stop() {
        if !step()? {
            return Ok(());
        }
        let last_work = Instant::now();
        while !pending() {
            if last_work.elapsed() > POLL_WINDOW || stop() {
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn steps_while_work_is_pending_and_stops_between_steps() {
        // Ten steps of work, no stop: all ten run, then the poll window passes.
        let left = Cell::new(10u32);
        let steps = Cell::new(0u32);
        let r: Result<(), ()> = serve(
            || false,
            || {
                steps.set(steps.get() + 1);
                left.set(left.get().saturating_sub(1));
                Ok(true)
            },
            || left.get() > 0,
        );
        assert_eq!((r, steps.get()), (Ok(()), 10));
        // Endless work, stopped after the third step: no fourth.
        steps.set(0);
        let r: Result<(), ()> = serve(
            || steps.get() >= 3,
            || {
                steps.set(steps.get() + 1);
                Ok(true)
            },
            || true,
        );
        assert_eq!((r, steps.get()), (Ok(()), 3));
        // A step that cannot go on ends the round; its error is passed on.
        assert_eq!(serve(|| false, || Ok::<_, ()>(false), || true), Ok(()));
        assert_eq!(serve(|| false, || Err::<bool, _>(7), || true), Err(7));
    }
}
