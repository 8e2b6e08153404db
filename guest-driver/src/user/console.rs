//! `print!` and `println!` for ring 3: one lock, one `rep outsb` per line.

use core::fmt::Write;

use spin::Mutex;

use crate::port::LineWriter;

static LOCK: Mutex<()> = Mutex::new(());

/// Writes formatted text to the console without interleaving with other CPUs.
pub fn print(args: core::fmt::Arguments) {
    let _guard = LOCK.lock();
    let mut w = LineWriter::new();
    let _ = w.write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::user::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::user::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
