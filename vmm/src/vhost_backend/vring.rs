//! A vring that can report errors to the frontend.
//!
//! vhost-user's way to say "this queue is broken" is the error eventfd the frontend gives with
//! SET_VRING_ERR (QEMU then sets DEVICE_NEEDS_RESET; so does our frontend). vhost-user-backend
//! 0.24 stores that eventfd inside its `VringState` without a way to signal it, so this wrapper
//! around its `VringRwLock` keeps its own handle to it and delegates everything else.

use std::fs::File;
use std::sync::{Arc, Mutex};

use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::Error as VirtQueError;
use vmm_sys_util::eventfd::EventFd;

use super::mem_table::BackendMemory;

/// `VringRwLock` plus the error eventfd.
#[derive(Clone)]
pub struct ErrVring {
    inner: VringRwLock<BackendMemory>,
    err: Arc<Mutex<Option<EventFd>>>,
}

impl ErrVring {
    /// Signals the frontend's error eventfd, if it gave one. Returns whether it did.
    pub fn signal_error(&self) -> bool {
        let err = self.err.lock().unwrap_or_else(|p| p.into_inner());
        err.as_ref().is_some_and(|e| e.write(1).is_ok())
    }
}

impl<'a> VringStateGuard<'a, BackendMemory> for ErrVring {
    type G = <VringRwLock<BackendMemory> as VringStateGuard<'a, BackendMemory>>::G;
}

impl<'a> VringStateMutGuard<'a, BackendMemory> for ErrVring {
    type G = <VringRwLock<BackendMemory> as VringStateMutGuard<'a, BackendMemory>>::G;
}

impl VringT<BackendMemory> for ErrVring {
    fn new(mem: BackendMemory, max_queue_size: u16) -> Result<Self, VirtQueError> {
        Ok(ErrVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            err: Arc::new(Mutex::new(None)),
        })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, BackendMemory>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, BackendMemory>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> std::io::Result<()> {
        self.inner.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled)
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), VirtQueError> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready)
    }

    fn set_kick(&self, file: Option<File>) {
        self.inner.set_kick(file)
    }

    fn read_kick(&self) -> std::io::Result<bool> {
        self.inner.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.inner.set_call(file)
    }

    fn set_err(&self, file: Option<File>) {
        // Keep a handle of our own (a duplicate), and give the original to the inner state.
        let ours = file.as_ref().and_then(|f| {
            f.try_clone().ok().map(|d| {
                use std::os::unix::io::{FromRawFd, IntoRawFd};
                // SAFETY: `d` is a fresh duplicate that we own; EventFd takes it over.
                unsafe { EventFd::from_raw_fd(d.into_raw_fd()) }
            })
        });
        *self.err.lock().unwrap_or_else(|p| p.into_inner()) = ours;
        self.inner.set_err(file)
    }
}
