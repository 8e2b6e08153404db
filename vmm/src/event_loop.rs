//! The VMM's event loop (event-manager, in the main thread). It decides when the run ends.
//!
//! Subscribers: the run-state eventfd (signalled by vCPU threads and devices when they end the
//! run) and, with `--timeout`, a timerfd. The device model (issue 5) adds its ioeventfds as
//! more subscribers through [`EventLoop::add`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::timerfd::TimerFd;

use crate::run_state::{GuestEnd, RunState};

/// A subscriber as the loop holds it.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Errors of the event loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// The epoll set could not be made or waited on.
    #[error("event loop: {0}")]
    Manager(#[from] event_manager::Error),
    /// The timerfd could not be made or armed.
    #[error("cannot set up the guest timeout: {0}")]
    Timer(vmm_sys_util::errno::Error),
}

/// Wakes the loop when the run state changes.
struct RunStateEvents {
    state: Arc<RunState>,
}

impl MutEventSubscriber for RunStateEvents {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Drain the counter; the loop re-reads the state after every dispatch.
        let _ = self.state.event().read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.state.event(), EventSet::IN)) {
            log::error!("cannot watch the vCPU events: {e}");
        }
    }
}

/// Ends the run when `--timeout` expires.
struct GuestTimer {
    timer: TimerFd,
    after: Duration,
    state: Arc<RunState>,
}

impl MutEventSubscriber for GuestTimer {
    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        let _ = self.timer.wait();
        self.state.finish(GuestEnd::Timeout(self.after));
        let _ = ops.remove(Events::new(&self.timer, EventSet::IN));
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("cannot watch the guest timer: {e}");
        }
    }
}

/// The event loop of one run.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    state: Arc<RunState>,
}

impl EventLoop {
    /// A loop watching `state`, ending the run after `timeout` if one is given. The timer
    /// starts now.
    pub fn new(state: Arc<RunState>, timeout: Option<Duration>) -> Result<Self, EventLoopError> {
        let mut manager = EventManager::<Subscriber>::new()?;
        manager.add_subscriber(Arc::new(Mutex::new(RunStateEvents {
            state: state.clone(),
        })));
        if let Some(after) = timeout {
            let mut timer = TimerFd::new().map_err(EventLoopError::Timer)?;
            timer.reset(after, None).map_err(EventLoopError::Timer)?;
            manager.add_subscriber(Arc::new(Mutex::new(GuestTimer {
                timer,
                after,
                state: state.clone(),
            })));
        }
        Ok(EventLoop { manager, state })
    }

    /// Adds a subscriber (e.g. a device's ioeventfd handler).
    pub fn add(&mut self, subscriber: Subscriber) {
        self.manager.add_subscriber(subscriber);
    }

    /// Runs until the run has ended, and returns how. An epoll failure ends the run as a VMM
    /// error.
    pub fn run(&mut self) -> GuestEnd {
        loop {
            if let Some(end) = self.state.end() {
                return end;
            }
            // The timeout is only a safety net: every end signals the eventfd.
            if let Err(e) = self.manager.run_with_timeout(1000) {
                self.state
                    .finish(GuestEnd::VmmError(format!("event loop: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn timeout_ends_the_run() {
        let s = Arc::new(RunState::new(1).unwrap());
        let mut l = EventLoop::new(s.clone(), Some(Duration::from_millis(50))).unwrap();
        let t = Instant::now();
        assert_eq!(l.run(), GuestEnd::Timeout(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(s.stopping());
    }

    #[test]
    fn another_thread_ends_the_run() {
        let s = Arc::new(RunState::new(1).unwrap());
        let mut l = EventLoop::new(s.clone(), Some(Duration::from_secs(30))).unwrap();
        let s2 = s.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.finish(GuestEnd::Exit(3));
        });
        let t = Instant::now();
        assert_eq!(l.run(), GuestEnd::Exit(3));
        assert!(t.elapsed() < Duration::from_secs(5));
        th.join().unwrap();
    }
}
