//! Control-queue processing: pops descriptor chains, walks them (one read of each
//! descriptor decides everything about it), gathers the device-readable request bytes, runs
//! the command and writes the response into the device-writable buffers, then decides
//! whether to interrupt.
//!
//! Chains are checked: readable descriptors must all come before writable ones, the request
//! may not exceed `MAX_REQUEST_BYTES`, indirect tables (not offered) are refused, every
//! buffer must be guest memory, and the response must fit the writable buffers. A chain whose
//! response cannot be delivered (too small, or a writable buffer outside guest memory) is not
//! run at all: nothing is written and the used length is 0.
//!
//! Work is bounded: one call handles at most a queue's worth of chains and about a
//! [`STEP_SLICES`] slices of data work. A long command (a FILL of all VRAM, say) stays in flight
//! across calls, its chain unused, until its data work is done.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::virtio_mmio::desc;

use crate::commands::CommandEngine;

/// How many slices of data work one bounded call does at most (16 MiB with the default
/// 4 MiB slices; at least one slice).
pub const STEP_SLICES: u64 = 4;
/// What a chain counts against the budget at least, so a queue of small commands is one step.
const CHAIN_COST: u64 = 4096;

/// The budget of one bounded step: [`STEP_SLICES`] slices of `engine`'s data work.
pub fn step_budget(engine: &CommandEngine) -> u64 {
    engine.slice_bytes().saturating_mul(STEP_SLICES)
}

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
    /// The chain was cut short: a loop, more descriptors than the queue, a bad `next`, a
    /// descriptor outside guest memory, or more than 4 GiB in all.
    Truncated,
    /// The chain uses an indirect table, a feature the device does not offer.
    Indirect,
}

/// One descriptor as read, once, from the table.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: GuestAddress,
    len: u32,
    flags: u16,
}

/// Walks the chain from `head` in the descriptor table at `table` (`size` entries), reading
/// each descriptor once: that one read decides its buffer, its direction, whether it names an
/// indirect table and where the chain goes next, so a vCPU rewriting the table meanwhile
/// cannot make two looks disagree. (virtio-queue's own walk would follow indirect tables
/// whether or not the feature was negotiated.)
fn walk<M: GuestMemory>(
    mem: &M,
    table: u64,
    size: u16,
    head: u16,
) -> (Vec<Desc>, Option<ChainFault>) {
    let mut out = Vec::new();
    let mut i = head;
    let mut total = 0u32;
    for _ in 0..size {
        if i >= size {
            return (out, Some(ChainFault::Truncated));
        }
        let at = GuestAddress(table.wrapping_add(16 * u64::from(i)));
        let Ok(d) = mem.read_obj::<Descriptor>(at) else {
            return (out, Some(ChainFault::Truncated));
        };
        if d.flags() & desc::F_INDIRECT != 0 {
            return (out, Some(ChainFault::Indirect));
        }
        let Some(t) = total.checked_add(d.len()) else {
            return (out, Some(ChainFault::Truncated));
        };
        total = t;
        out.push(Desc {
            addr: d.addr(),
            len: d.len(),
            flags: d.flags(),
        });
        if d.flags() & desc::F_NEXT == 0 {
            return (out, None);
        }
        i = d.next();
    }
    // More descriptors than the queue has: a loop.
    (out, Some(ChainFault::Truncated))
}

struct Chain {
    request: Vec<u8>,
    writable: Vec<(GuestAddress, usize)>,
    fault: Option<ChainFault>,
}

fn gather<M: GuestMemory>(mem: &M, descs: &[Desc], fault: Option<ChainFault>) -> Chain {
    let mut c = Chain {
        request: Vec::new(),
        writable: Vec::new(),
        fault: None,
    };
    for d in descs {
        let len = d.len as usize;
        if d.flags & desc::F_WRITE != 0 {
            c.writable.push((d.addr, len));
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
        if mem.read_slice(&mut c.request[start..end], d.addr).is_err() {
            c.fault = Some(ChainFault::Unreadable);
        }
    }
    if c.fault.is_none() {
        c.fault = fault;
    }
    c
}

/// Whether every writable buffer is guest memory and together they hold `need` bytes: only
/// then can a response be delivered whole.
fn deliverable<M: GuestMemory>(mem: &M, writable: &[(GuestAddress, usize)], need: usize) -> bool {
    let mut room = 0usize;
    for &(addr, len) in writable {
        if len > 0 && !mem.check_range(addr, len, Permissions::Write) {
            return false;
        }
        room = room.saturating_add(len);
    }
    room >= need
}

/// Writes `resp` across the writable buffers; returns the used length. Nothing is written
/// unless every buffer is guest memory and the response fits ([`deliverable`]), so a
/// response is delivered whole or not at all.
fn scatter<M: GuestMemory>(mem: &M, writable: &[(GuestAddress, usize)], resp: &[u8]) -> u32 {
    if !deliverable(mem, writable, resp.len()) {
        return 0;
    }
    let mut done = 0usize;
    for &(addr, len) in writable {
        if done == resp.len() {
            break;
        }
        let n = len.min(resp.len() - done);
        if mem.write_slice(&resp[done..done + n], addr).is_err() {
            // Checked above: guest memory does not shrink under a running VM.
            return 0;
        }
        done += n;
    }
    u32::try_from(done).unwrap_or(0)
}

/// A chain whose command is under way: its head and its (checked) response buffers.
#[derive(Debug)]
pub struct InFlight {
    head: u16,
    writable: Vec<(GuestAddress, usize)>,
}

/// Which queue a chain came from: they carry different commands and answer differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// controlq: every request gets a response, and is not run if the response cannot be
    /// delivered whole.
    Control,
    /// cursorq: UPDATE_CURSOR and MOVE_CURSOR; stock drivers give no response buffer, so the
    /// command runs anyway and the response is written only if it can be, whole.
    Cursor,
}

/// What handling a chain gave.
enum Handled {
    /// The used length to report.
    Used(u32),
    /// The command is under way.
    Running(InFlight),
}

fn handle_chain<M: GuestMemory>(
    mem: &M,
    head: u16,
    descs: &[Desc],
    fault: Option<ChainFault>,
    engine: &mut CommandEngine,
    budget: &mut u64,
    role: QueueRole,
) -> Handled {
    let c = gather(mem, descs, fault);
    let hdr = CtrlHdr::read_from(&c.request).unwrap_or_default();
    let need = if c.fault.is_none() {
        p::response_size(hdr.type_)
    } else {
        std::mem::size_of::<CtrlHdr>()
    };
    if role == QueueRole::Control && !deliverable(mem, &c.writable, need) {
        // The answer could not be delivered, so the command must not run (a CLEAN or DESTROY
        // nobody hears about would leave the driver's books wrong).
        engine
            .stats_mut()
            .count_command(p::command_name(hdr.type_), true);
        engine.stats_mut().dropped_chains += 1;
        return Handled::Used(0);
    }
    let resp = match c.fault {
        None if role == QueueRole::Cursor => engine.handle_cursor(&c.request),
        None => match engine.start(mem, &c.request) {
            Some(resp) => resp,
            None => match engine.resume(mem, budget) {
                Some(resp) => resp,
                None => {
                    return Handled::Running(InFlight {
                        head,
                        writable: c.writable,
                    })
                }
            },
        },
        Some(_) => {
            engine
                .stats_mut()
                .count_command(p::command_name(hdr.type_), true);
            hdr.response(p::RESP_ERR_BAD_REQUEST).as_bytes().to_vec()
        }
    };
    Handled::Used(complete(mem, &c.writable, &resp, engine, role))
}

/// Delivers a response; counts it as dropped if it could not be (on the control queue: the
/// cursor queue's responses are optional).
fn complete<M: GuestMemory>(
    mem: &M,
    writable: &[(GuestAddress, usize)],
    resp: &[u8],
    engine: &mut CommandEngine,
    role: QueueRole,
) -> u32 {
    let used = scatter(mem, writable, resp);
    if used == 0 && role == QueueRole::Control {
        engine.stats_mut().dropped_chains += 1;
    }
    used
}

/// Processes available chains, at most a queue's worth and about `budget` bytes of data work
/// (the command in flight, if any, goes first). A command that is not finished when the
/// budget runs out is left in `inflight`. Returns whether the driver should be interrupted.
pub fn process<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    engine: &mut CommandEngine,
    inflight: &mut Option<InFlight>,
    budget: u64,
    role: QueueRole,
) -> Result<bool, QueueError> {
    // virtio-queue treats an avail ring at address 0 as "not set" and pops nothing from it
    // although its index may show work: that would leave the work pending forever.
    if !queue.is_valid(mem) || queue.avail_ring() == 0 {
        return Err(QueueError::Invalid);
    }
    let mut budget = budget.max(1);
    let mut used_any = false;
    if let Some(f) = inflight.take() {
        match engine.resume(mem, &mut budget) {
            Some(resp) => {
                let len = complete(mem, &f.writable, &resp, engine, role);
                queue.add_used(mem, f.head, len)?;
                used_any = true;
            }
            None if engine.is_running() => {
                *inflight = Some(f);
                return Ok(false);
            }
            // Nothing under way after all (cannot happen: a reset clears both).
            None => {}
        }
        if budget == 0 {
            // Nothing in flight any more: the driver must be able to notify again (the
            // pass that started this command left notifications off).
            queue.enable_notification(mem)?;
            return Ok(used_any && queue.needs_notification(mem)?);
        }
    }
    // An avail index more than a queue's worth ahead is a broken ring (virtio-queue would
    // silently refuse to pop anything, leaving the driver waiting forever).
    let avail = queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire)?;
    if (avail - std::num::Wrapping(queue.next_avail())).0 > queue.size() {
        return Err(QueueError::Invalid);
    }
    // At most a queue's worth of chains per call, so one call cannot run forever (a guest can
    // keep the ring fed, even by pointing response buffers at the avail index); the caller
    // sees [`crate::PvgpuDevice::has_pending`] and comes back.
    let mut chains = queue.size();
    loop {
        queue.disable_notification(mem)?;
        let mut progressed = false;
        while chains > 0 && budget > 0 {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let (descs, fault) = walk(mem, queue.desc_table(), queue.size(), head);
            budget = budget.saturating_sub(CHAIN_COST);
            chains -= 1;
            progressed = true;
            match handle_chain(mem, head, &descs, fault, engine, &mut budget, role) {
                Handled::Used(len) => {
                    queue.add_used(mem, head, len)?;
                    used_any = true;
                }
                Handled::Running(f) => {
                    // Notifications stay off while the device is busy with it: the caller
                    // sees `has_pending` and comes back; the pass that finishes it turns
                    // them on again.
                    *inflight = Some(f);
                    return Ok(used_any && queue.needs_notification(mem)?);
                }
            }
        }
        let more = queue.enable_notification(mem)?;
        if chains == 0 || budget == 0 || !more || !progressed {
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
        assert!(process(
            &mut q,
            &mem,
            &mut engine,
            &mut None,
            u64::MAX,
            QueueRole::Control
        )
        .unwrap());
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
        process(
            &mut q,
            &mem,
            &mut engine,
            &mut None,
            u64::MAX,
            QueueRole::Control,
        )
        .unwrap();
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
            process(
                &mut q,
                &mem,
                &mut engine,
                &mut None,
                u64::MAX,
                QueueRole::Control
            ),
            Err(QueueError::Invalid)
        ));
    }
}
