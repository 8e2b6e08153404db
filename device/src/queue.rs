//! Control-queue processing: pops descriptor chains (virtio-queue checks indices, loops
//! and indirect tables), gathers the device-readable request bytes, runs the command and
//! writes the response into the device-writable buffers, then decides whether to interrupt.
//!
//! Chains are checked: readable descriptors must all come before writable ones, the request
//! may not exceed `MAX_REQUEST_BYTES`, every buffer must be guest memory, and the response
//! must fit the writable buffers (otherwise nothing is written and the used length is 0).

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::virtio_mmio::desc;

use crate::commands::CommandEngine;

/// Errors that make the queue unusable (the device then needs a reset).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The rings are not in guest memory, or the queue is not ready.
    #[error("the control queue is not valid")]
    Invalid,
    /// virtio-queue could not update the rings.
    #[error("virtqueue: {0}")]
    Virtqueue(#[from] virtio_queue::Error),
}

/// Why a chain's request could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainFault {
    /// A device-readable descriptor after a device-writable one.
    Order,
    /// More than MAX_REQUEST_BYTES of request.
    TooLong,
    /// A readable buffer is not guest memory.
    Unreadable,
    /// The chain was cut short: a loop, more descriptors than the queue, or a bad `next`.
    Truncated,
    /// The chain uses an indirect table, a feature the device does not offer.
    Indirect,
}

/// Whether the chain from `head` in the descriptor table at `table` (of `size` entries) uses
/// an indirect table. virtio-queue follows indirect tables whether or not the feature was
/// negotiated, so the device looks first; it never offers the feature.
fn uses_indirect<M: GuestMemory>(mem: &M, table: u64, size: u16, head: u16) -> bool {
    let mut i = head;
    for _ in 0..size {
        let at = table.wrapping_add(16 * u64::from(i));
        let flags: u16 = mem.read_obj(GuestAddress(at.wrapping_add(12))).unwrap_or(0);
        if flags & desc::F_INDIRECT != 0 {
            return true;
        }
        if flags & desc::F_NEXT == 0 {
            return false;
        }
        i = mem
            .read_obj(GuestAddress(at.wrapping_add(14)))
            .unwrap_or(size);
        if i >= size {
            return false;
        }
    }
    false
}

struct Chain {
    request: Vec<u8>,
    writable: Vec<(GuestAddress, usize)>,
    fault: Option<ChainFault>,
}

fn gather<M: GuestMemory>(mem: &M, chain: virtio_queue::DescriptorChain<&M>) -> Chain {
    let mut c = Chain {
        request: Vec::new(),
        writable: Vec::new(),
        fault: None,
    };
    let mut more = false;
    for desc in chain {
        more = desc.has_next();
        let len = desc.len() as usize;
        if desc.is_write_only() {
            c.writable.push((desc.addr(), len));
            continue;
        }
        if c.fault.is_some() {
            continue;
        }
        if !c.writable.is_empty() {
            c.fault = Some(ChainFault::Order);
            continue;
        }
        let start = c.request.len();
        let Some(end) = start
            .checked_add(len)
            .filter(|&e| e <= p::MAX_REQUEST_BYTES)
        else {
            c.fault = Some(ChainFault::TooLong);
            continue;
        };
        c.request.resize(end, 0);
        if mem
            .read_slice(&mut c.request[start..end], desc.addr())
            .is_err()
        {
            c.fault = Some(ChainFault::Unreadable);
        }
    }
    if more && c.fault.is_none() {
        c.fault = Some(ChainFault::Truncated);
    }
    c
}

/// Writes `resp` across the writable buffers; returns the used length (0 if it does not fit
/// or cannot be written).
fn scatter<M: GuestMemory>(mem: &M, writable: &[(GuestAddress, usize)], resp: &[u8]) -> u32 {
    let room = writable
        .iter()
        .fold(0usize, |acc, (_, l)| acc.saturating_add(*l));
    if room < resp.len() {
        return 0;
    }
    let mut done = 0usize;
    for &(addr, len) in writable {
        if done == resp.len() {
            break;
        }
        let n = len.min(resp.len() - done);
        if mem.write_slice(&resp[done..done + n], addr).is_err() {
            return 0;
        }
        done += n;
    }
    done as u32
}

/// Which queue a chain came from: they carry different commands and answer differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// controlq: every request gets a response, and is not run if the response cannot fit.
    Control,
    /// cursorq: UPDATE_CURSOR and MOVE_CURSOR; stock drivers give no response buffer, so the
    /// command runs anyway and the response is written only if it fits.
    Cursor,
}

fn handle_chain<M: GuestMemory>(
    mem: &M,
    chain: virtio_queue::DescriptorChain<&M>,
    indirect: bool,
    engine: &mut CommandEngine,
    role: QueueRole,
) -> u32 {
    let mut c = gather(mem, chain);
    if indirect {
        c.fault = Some(ChainFault::Indirect);
    }
    let hdr = CtrlHdr::read_from(&c.request).unwrap_or_default();
    let room: usize = c.writable.iter().map(|&(_, len)| len).sum();
    if role == QueueRole::Control && c.fault.is_none() && room < p::response_size(hdr.type_) {
        // The answer could not be delivered, so the command must not run (a CLEAN or DESTROY
        // nobody hears about would leave the driver's books wrong).
        engine
            .stats_mut()
            .count_command(p::command_name(hdr.type_), true);
        engine.stats_mut().dropped_chains += 1;
        return 0;
    }
    let resp = match c.fault {
        None if role == QueueRole::Cursor => engine.handle_cursor(&c.request),
        None => engine.handle(mem, &c.request),
        Some(_) => {
            let hdr = CtrlHdr::read_from(&c.request).unwrap_or_default();
            engine
                .stats_mut()
                .count_command(p::command_name(hdr.type_), true);
            hdr.response(p::RESP_ERR_BAD_REQUEST).as_bytes().to_vec()
        }
    };
    let used = scatter(mem, &c.writable, &resp);
    if used == 0 && role == QueueRole::Control {
        engine.stats_mut().dropped_chains += 1;
    }
    used
}

/// Processes every available chain; returns whether the driver should be interrupted.
pub fn process<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    engine: &mut CommandEngine,
    role: QueueRole,
) -> Result<bool, QueueError> {
    // virtio-queue treats an avail ring at address 0 as "not set" and pops nothing from it
    // although its index may show work: that would leave the work pending forever.
    if !queue.is_valid(mem) || queue.avail_ring() == 0 {
        return Err(QueueError::Invalid);
    }
    // An avail index more than a queue's worth ahead is a broken ring (virtio-queue would
    // silently refuse to pop anything, leaving the driver waiting forever).
    let avail = queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire)?;
    if (avail - std::num::Wrapping(queue.next_avail())).0 > queue.size() {
        return Err(QueueError::Invalid);
    }
    let mut used_any = false;
    // At most a queue's worth of chains per call, so one call cannot run forever (a guest can
    // keep the ring fed, even by pointing response buffers at the avail index); the caller
    // sees [`crate::PvgpuDevice::has_pending`] and comes back.
    let mut budget = queue.size();
    loop {
        queue.disable_notification(mem)?;
        let mut progressed = false;
        while budget > 0 {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let indirect = uses_indirect(mem, queue.desc_table(), queue.size(), head);
            let len = handle_chain(mem, chain, indirect, engine, role);
            queue.add_used(mem, head, len)?;
            used_any = true;
            progressed = true;
            budget -= 1;
        }
        let more = queue.enable_notification(mem)?;
        if budget == 0 || !more || !progressed {
            break;
        }
    }
    Ok(used_any && queue.needs_notification(mem)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::DeviceConfig;
    use crate::guest_ram::GuestRamPunch;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    struct NoPunch;
    impl GuestRamPunch for NoPunch {
        fn punch(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn setup() -> (GuestMemoryMmap, CommandEngine) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let cfg = DeviceConfig::new(16 << 20, 1 << 20).unwrap();
        (mem, CommandEngine::new(cfg, Box::new(NoPunch)).unwrap())
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    #[test]
    fn mock_queue_request_and_response() {
        let (mem, mut engine) = setup();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        mem.write_slice(
            CtrlHdr::fenced(p::CMD_GET_INFO, 3).as_bytes(),
            GuestAddress(0x10_0000),
        )
        .unwrap();
        vq.add_desc_chains(
            &[
                desc(0x10_0000, 24, 1, 1),
                desc(0x20_0000, 64, 2, 0),
                // A second chain: response buffer too small.
                desc(0x10_0000, 24, 1, 3),
                desc(0x20_1000, 16, 2, 0),
            ],
            0,
        )
        .unwrap();
        assert!(process(&mut q, &mem, &mut engine, QueueRole::Control).unwrap());
        let e0 = vq.used().ring().ref_at(0).unwrap().load();
        let e1 = vq.used().ring().ref_at(1).unwrap().load();
        assert_eq!((e0.id(), e0.len()), (0, 64));
        assert_eq!((e1.id(), e1.len()), (2, 0));
        let info: p::RespInfo = mem.read_obj(GuestAddress(0x20_0000)).unwrap();
        assert_eq!(info.hdr.type_, p::RESP_OK_INFO);
        assert_eq!(info.hdr.fence_id, 3);
        assert_eq!(engine.stats().dropped_chains, 1);
    }

    #[test]
    fn mock_queue_loop_is_bounded() {
        let (mem, mut engine) = setup();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        // Descriptor 0 -> 1 -> 0 ...: virtio-queue stops after queue-size descriptors.
        vq.add_desc_chains(&[desc(0x10_0000, 24, 1, 1), desc(0x20_0000, 64, 3, 0)], 0)
            .unwrap();
        process(&mut q, &mem, &mut engine, QueueRole::Control).unwrap();
        let e0 = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(e0.id(), 0);
        assert_eq!(e0.len(), 24); // readable-after-writable: BAD_REQUEST
        let h: CtrlHdr = mem.read_obj(GuestAddress(0x20_0000)).unwrap();
        assert_eq!(h.type_, p::RESP_ERR_BAD_REQUEST);
    }

    #[test]
    fn not_ready_queue_is_invalid() {
        let (mem, mut engine) = setup();
        let mut q = Queue::new(16).unwrap();
        assert!(matches!(
            process(&mut q, &mem, &mut engine, QueueRole::Control),
            Err(QueueError::Invalid)
        ));
    }
}
