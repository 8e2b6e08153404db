//! The VMM's event loop (event-manager, in the main thread). It decides when the run ends.
//!
//! Subscribers: the run-state eventfd (signalled by vCPU threads and devices when they end the
//! run), with `--timeout` a timerfd, with `--sample-ms` the host-memory [`Sampler`] (a
//! periodic timerfd), and the GPU's queue-notify ioeventfd (added through [`EventLoop::add`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::timerfd::TimerFd;

use crate::run::state::{GuestEnd, RunState};
use crate::run::stats::{MemoryProbe, Sample, Timeline};

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
    /// The sampling timerfd could not be made or armed.
    #[error("cannot set up host-memory sampling: {0}")]
    SampleTimer(vmm_sys_util::errno::Error),
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

/// Samples host memory (guest RAM, VRAM, RSS) into the timeline at a fixed interval.
pub struct Sampler {
    timer: TimerFd,
    probe: MemoryProbe,
    timeline: Arc<Timeline>,
    full: bool,
}

impl Sampler {
    /// A sampler taking a [`Sample`] every `every` (the first one `every` from now).
    pub fn new(
        every: Duration,
        probe: MemoryProbe,
        timeline: Arc<Timeline>,
    ) -> Result<Self, EventLoopError> {
        let mut timer = TimerFd::new().map_err(EventLoopError::SampleTimer)?;
        timer
            .reset(every, Some(every))
            .map_err(EventLoopError::SampleTimer)?;
        Ok(Sampler {
            timer,
            probe,
            timeline,
            full: false,
        })
    }
}

impl MutEventSubscriber for Sampler {
    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        // Missed expirations (a long queue job on this thread) are not made up for: one
        // sample per wake-up, stamped with the real time.
        let _ = self.timer.wait();
        let kept = self.timeline.add_sample(Sample {
            t_ms: self.timeline.now_ms(),
            mem: self.probe.snapshot(),
        });
        if !kept && !self.full {
            self.full = true;
            log::warn!("host-memory samples are full; no more are kept");
            let _ = ops.remove(Events::new(&self.timer, EventSet::IN));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("cannot watch the sampling timer: {e}");
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
    fn sampler_samples_until_the_end() {
        let s = Arc::new(RunState::new(1).unwrap());
        let t = Arc::new(Timeline::new(Instant::now()));
        let ram = Arc::new(
            pvgpu_device::HostMemory::new(pvgpu_device::MemoryBackend::Shared, "t", 1 << 20)
                .unwrap(),
        );
        let probe = MemoryProbe::new(ram, None);
        let mut l = EventLoop::new(s.clone(), Some(Duration::from_millis(120))).unwrap();
        l.add(Arc::new(Mutex::new(
            Sampler::new(Duration::from_millis(10), probe, t.clone()).unwrap(),
        )));
        l.run();
        let v = t.samples();
        assert!(v.len() >= 3 && v.len() <= 13, "{} samples", v.len());
        assert!(v.windows(2).all(|w| w[1].t_ms > w[0].t_ms));
        assert!(v[0].t_ms >= 10.0);
        assert!(v
            .iter()
            .all(|x| x.mem.rss_bytes > 0 && x.mem.vram_bytes == 0));
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
