//! The 16550 serial console at SERIAL_PORT: vm-superio's UART, writing to stdout.
//!
//! Output is line-buffered (vm-superio flushes after every byte; we pass that on only at a
//! newline, or when the buffer is large) and flushed at exit. The first byte records
//! `boot.first_output_ms`. The UART's interrupt is an eventfd that the VMM may register as an
//! irqfd for SERIAL_IRQ.

use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::run::stats::Timeline;

const FLUSH_AT: usize = 4096;

/// Raises the serial IRQ by signalling an eventfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's serial output goes: a line buffer in front of a writer, timing the first
/// byte.
pub struct ConsoleOut {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    timeline: Arc<Timeline>,
    // The last byte the guest wrote, if any.
    last: Option<u8>,
}

impl ConsoleOut {
    /// Output to `out`.
    pub fn new(out: Box<dyn Write + Send>, timeline: Arc<Timeline>) -> Self {
        ConsoleOut {
            out,
            buf: Vec::with_capacity(256),
            timeline,
            last: None,
        }
    }

    /// Writes out whatever is buffered.
    pub fn drain(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let r = self.out.write_all(&self.buf);
            self.buf.clear();
            r?;
        }
        self.out.flush()
    }

    /// At exit: writes out what is buffered and ends a partial last line, so that what the
    /// VMM prints next starts on a line of its own.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.last.is_some_and(|b| b != b'\n') {
            self.buf.push(b'\n');
            self.last = Some(b'\n');
        }
        self.drain()
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(&b) = data.last() {
            self.timeline.mark_first_output();
            self.last = Some(b);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.last() == Some(&b'\n') || self.buf.len() >= FLUSH_AT {
            self.drain()
        } else {
            Ok(())
        }
    }
}

/// The serial port as a bus device.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        SerialDevice {
            uart: Serial::new(EventFdTrigger(irq), out),
        }
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().drain()
    }

    /// At exit: flushes, ending a partial last line.
    pub fn finish(&mut self) -> io::Result<()> {
        self.uart.writer_mut().finish()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Every register is one byte; a longer access (`rep insb`) reads the same register.
        let reg = u8::try_from(offset).unwrap_or(u8::MAX);
        for b in data.iter_mut() {
            *b = self.uart.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A `rep outsb` to THR arrives as many bytes: each is one write to the register.
        let reg = u8::try_from(offset).unwrap_or(u8::MAX);
        for &b in data {
            if let Err(e) = self.uart.write(reg, b) {
                log::debug!("serial write at offset {offset}: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_reach_the_output_line_by_line() {
        let t = Arc::new(Timeline::new(Instant::now()));
        let sink = Sink::default();
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            ConsoleOut::new(Box::new(sink.clone()), t.clone()),
        );
        assert_eq!(t.first_output_ms(), None);
        dev.write(0, b"hel");
        assert!(t.first_output_ms().is_some());
        assert!(sink.0.lock().unwrap().is_empty(), "no newline yet");
        dev.write(0, b"lo\nab");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        dev.flush().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nab");
        dev.finish().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nab\n");
        dev.write(0, b"c\n");
        dev.finish().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nab\nc\n");
        // LSR says the transmitter is empty.
        let mut lsr = [0u8; 1];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        // Scratch register round trip.
        dev.write(7, &[0x5a]);
        let mut scr = [0u8; 2];
        dev.read(7, &mut scr);
        assert_eq!(scr, [0x5a, 0x5a]);
    }
}
