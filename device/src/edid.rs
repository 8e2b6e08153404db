//! The EDID block (VESA E-EDID 1.4, one 128-byte base block) that GET_EDID returns: a digital
//! display whose preferred mode (the first detailed timing descriptor) is the scanout's mode
//! at 60 Hz, named "pvgpu".

/// Bytes of the base block.
pub const EDID_BLOCK: usize = 128;
/// Largest width or height a detailed timing descriptor can carry (12 bits).
pub const MAX_EDID_DIMENSION: u32 = 4095;

/// Blanking added around the active area (in the spirit of CVT reduced blanking).
const H_BLANK: u32 = 160;
const V_BLANK: u32 = 30;
const H_SYNC_OFFSET: u32 = 48;
const H_SYNC_WIDTH: u32 = 32;
const V_SYNC_OFFSET: u32 = 3;
const V_SYNC_WIDTH: u32 = 6;
const REFRESH_HZ: u64 = 60;

/// Errors building an EDID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EdidError {
    /// The mode does not fit in a detailed timing descriptor.
    #[error("mode {width}x{height} does not fit an EDID timing (1..={MAX_EDID_DIMENSION} each)")]
    Mode {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// The EDID base block for a `width` x `height` display.
pub fn edid_block(width: u32, height: u32) -> Result<[u8; EDID_BLOCK], EdidError> {
    let bad = EdidError::Mode { width, height };
    if !(1..=MAX_EDID_DIMENSION).contains(&width) || !(1..=MAX_EDID_DIMENSION).contains(&height) {
        return Err(bad);
    }
    let mut e = [0u8; EDID_BLOCK];
    // Header.
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "PVG": three 5-bit letters (A = 1), big-endian.
    let letter = |c: u8| u16::from(c - b'A' + 1);
    let id = (letter(b'P') << 10) | (letter(b'V') << 5) | letter(b'G');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x0001u16.to_le_bytes()); // product code
    e[12..16].copy_from_slice(&0u32.to_le_bytes()); // serial number
    e[16] = 1; // week of manufacture
    e[17] = (2024 - 1990) as u8; // year of manufacture
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0xa5; // digital input, 8 bits per colour, DisplayPort
    e[21] = 0; // screen size unknown (projector-like: aspect from the timing)
    e[22] = 0;
    e[23] = 0x78; // gamma 2.2
    e[24] = 0x06; // RGB 4:4:4, sRGB default off, preferred timing includes native format
                  // Chromaticity: sRGB primaries and D65 white, as most monitors report them.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // Established timings (35..38): none. Standard timings: all unused.
    for i in 0..8 {
        e[38 + 2 * i] = 0x01;
        e[39 + 2 * i] = 0x01;
    }
    e[54..72].copy_from_slice(&detailed_timing(width, height));
    e[72..90].copy_from_slice(&text_descriptor(0xfc, b"pvgpu"));
    e[90..108].copy_from_slice(&range_limits());
    e[108..126].copy_from_slice(&dummy_descriptor());
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    Ok(e)
}

fn detailed_timing(w: u32, h: u32) -> [u8; 18] {
    let total = u64::from(w + H_BLANK) * u64::from(h + V_BLANK) * REFRESH_HZ;
    // Pixel clock in 10 kHz units; 4095x4095 needs 105,000 (1.05 GHz) and would not fit,
    // so it saturates (the active size, which is what drivers read, stays exact).
    let clock = u16::try_from(total.div_ceil(10_000)).unwrap_or(u16::MAX);
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&clock.to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (H_BLANK & 0xff) as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((H_BLANK >> 8) & 0xf)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (V_BLANK & 0xff) as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((V_BLANK >> 8) & 0xf)) as u8;
    d[8] = (H_SYNC_OFFSET & 0xff) as u8;
    d[9] = (H_SYNC_WIDTH & 0xff) as u8;
    d[10] = ((V_SYNC_OFFSET & 0xf) << 4 | (V_SYNC_WIDTH & 0xf)) as u8;
    d[11] = 0; // high bits of the sync fields (all small)
               // Image size in mm at about 96 dpi (0.2646 mm per pixel).
    let mm = |px: u32| px * 2646 / 10_000;
    let (wm, hm) = (mm(w), mm(h));
    d[12] = (wm & 0xff) as u8;
    d[13] = (hm & 0xff) as u8;
    d[14] = (((wm >> 8) & 0xf) << 4 | ((hm >> 8) & 0xf)) as u8;
    d[17] = 0x1e; // digital separate sync, +hsync, +vsync
    d
}

fn text_descriptor(tag: u8, text: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    let mut body = [0x20u8; 13];
    let n = text.len().min(12);
    body[..n].copy_from_slice(&text[..n]);
    body[n] = 0x0a;
    d[5..18].copy_from_slice(&body);
    d
}

fn range_limits() -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = 0xfd;
    // 50-75 Hz vertical, 30-160 kHz horizontal, 1.1 GHz max pixel clock (in 10 MHz units),
    // no secondary timing formula.
    d[5..11].copy_from_slice(&[50, 75, 30, 160, 110, 0x01]);
    d[11..18].copy_from_slice(&[0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20]);
    d
}

fn dummy_descriptor() -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = 0x10;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_valid_and_names_the_mode() {
        for (w, h) in [(1280, 800), (640, 480), (1920, 1080), (4095, 4095), (1, 1)] {
            let e = edid_block(w, h).unwrap();
            assert_eq!(&e[0..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
            // The first detailed timing's active size, decoded as drivers do.
            let hw = u32::from(e[0x38]) | (u32::from(e[0x3a]) & 0xf0) << 4;
            let vh = u32::from(e[0x3b]) | (u32::from(e[0x3d]) & 0xf0) << 4;
            assert_eq!((hw, vh), (w, h));
            assert_ne!(u16::from_le_bytes([e[0x36], e[0x37]]), 0, "pixel clock");
            assert_eq!((e[18], e[19]), (1, 4));
        }
        // "PVG".
        assert_eq!(edid_block(800, 600).unwrap()[8..10], [0x42, 0xc7]);
    }

    #[test]
    fn modes_that_do_not_fit_are_refused() {
        assert!(edid_block(0, 600).is_err());
        assert!(edid_block(4096, 600).is_err());
        assert!(edid_block(800, u32::MAX).is_err());
    }
}
