//! The picture the guest's `display` workload draws and the host's tests expect on the
//! scanout: defined once so both sides agree pixel for pixel.

/// The colour `(r, g, b)` of pixel `(x, y)` in a `width` x `height` picture: a red ramp left
/// to right, a green ramp top to bottom, and a blue checkerboard of 32-pixel squares.
pub const fn test_pattern(x: u32, y: u32, width: u32, height: u32) -> [u8; 3] {
    let w = if width == 0 { 1 } else { width as u64 };
    let h = if height == 0 { 1 } else { height as u64 };
    let r = (x as u64 * 255 / w) as u8;
    let g = (y as u64 * 255 / h) as u8;
    let b = if (x / 32 + y / 32).is_multiple_of(2) {
        0xff
    } else {
        0x20
    };
    [r, g, b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_and_squares() {
        assert_eq!(test_pattern(0, 0, 1280, 800), [0, 0, 0xff]);
        assert_eq!(test_pattern(1279, 799, 1280, 800), [254, 254, 0x20]);
        assert_eq!(test_pattern(32, 0, 1280, 800)[2], 0x20);
    }
}
