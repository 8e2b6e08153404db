//! A raw vhost-user client for the malformed-message tests and the fuzzer: it builds message
//! bytes without checking them and sends them with any file descriptors attached, which the
//! `vhost` crate's `Frontend` (rightly) never does.

use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// The header flag bits: protocol version 1, and "reply wanted".
pub const FLAG_VERSION: u32 = 0x1;
/// VHOST_USER_NEED_REPLY.
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// A message: the 12-byte header (`code`, `flags`, `size`), then `body`. `size` may disagree
/// with the body (a lying header).
pub fn message_with_size(code: u32, flags: u32, size: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&code.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&size.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// A message whose header tells the body's true size.
pub fn message(code: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    message_with_size(code, flags, body.len() as u32, body)
}

/// Sends `bytes` in one `sendmsg` with `fds` as SCM_RIGHTS (never SIGPIPE).
pub fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut cbuf = vec![0u8; space.max(1)];
    // SAFETY: an all-zero msghdr is a valid value; the fields used are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space;
        // SAFETY: msg_control points at `space` bytes, room for one control header carrying
        // `fds.len()` descriptors; CMSG_FIRSTHDR is non-null for a buffer that large.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    // SAFETY: `mh` points at `iov`, `bytes` and `cbuf`, all alive for the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}
