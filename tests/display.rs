//! The GPU as a plain virtio-gpu, proven by virtio-drivers' `VirtIOGpu` in the `display` guest
//! workload, and the memory extension on its framebuffer: `pvgpu run --screenshot` writes the
//! scanout as a PNG, which must be the test pattern pixel for pixel, with the framebuffer's
//! backing kept (`--no-clean`) and after CLEAN dropped it (host guest RAM goes down by the
//! framebuffer's size). Needs /dev/kvm (fails without it).

mod common;

use std::path::{Path, PathBuf};

use common::{boot, code, exit_status, root};
use pvgpu_abi::layout::phase;
use pvgpu_abi::pattern::test_pattern;

fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/test-display");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Decodes an RGB PNG: (width, height, pixels).
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = png::Decoder::new(file).read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The PNG must be the `w` x `h` test pattern, every pixel.
fn assert_pattern(path: &Path, w: u32, h: u32) {
    let (pw, ph, px) = decode(path);
    assert_eq!((pw, ph), (w, h), "screenshot size");
    let mut bad = 0usize;
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            if px[i..i + 3] != test_pattern(x, y, w, h) {
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 0, "{bad} pixels differ from the pattern");
}

fn stats(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("stats file");
    serde_json::from_str(&text).expect("stats JSON")
}

fn guest_ram_at(v: &serde_json::Value, n: u32) -> Option<u64> {
    v["phases"]
        .as_array()?
        .iter()
        .find(|p| p["phase"].as_u64() == Some(u64::from(n)))
        .and_then(|p| p["guest_ram_bytes"].as_u64())
}

#[test]
fn stock_driver_then_clean_keeps_the_picture() {
    let png = scratch("out.png");
    let json = scratch("stats.json");
    let (png_s, json_s) = (png.to_str().unwrap(), json.to_str().unwrap());
    let r = boot(
        &["--screenshot", png_s, "--stats-json", json_s],
        &["display"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout
            .contains("VirtIOGpu: 1280x800, EDID preferred mode 1280x800"),
        "{}",
        r.dump()
    );
    assert!(r.stdout.contains("display: PASS"), "{}", r.dump());
    // After the clean: the scanout still shows the picture, from VRAM.
    assert_pattern(&png, 1280, 800);

    let v = stats(&json);
    let fb = 1280 * 800 * 4;
    let drawn = guest_ram_at(&v, phase::FB_DRAWN).expect("fb-drawn phase");
    let cleaned = guest_ram_at(&v, phase::FB_CLEANED).expect("fb-cleaned phase");
    let freed = drawn.saturating_sub(cleaned);
    assert!(
        freed as f64 >= fb as f64 * 0.99,
        "CLEAN of the framebuffer freed {freed} bytes of host guest RAM, expected {fb}"
    );
    let dev = &v["device"];
    assert!(dev["bytes_cleaned"].as_u64().unwrap() >= fb);
    assert!(dev["flushes"].as_u64().unwrap() >= 3, "{dev}");
    // The resource's host copy is counted as VRAM in use.
    assert!(dev["vram_used"].as_u64().unwrap() >= fb, "{dev}");
    // The stock driver's commands and the cursor queue's were served without error.
    for cmd in [
        "get_edid",
        "resource_create_2d",
        "update_cursor",
        "move_cursor",
    ] {
        let c = &dev["by_command"][cmd];
        assert!(c["count"].as_u64().unwrap_or(0) >= 1, "{cmd}: {dev}");
        assert_eq!(c["errors"].as_u64(), Some(0), "{cmd}: {dev}");
    }
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(&json);
}

#[test]
fn before_the_clean_the_picture_is_the_same() {
    let png = scratch("noclean.png");
    let json = scratch("noclean.json");
    let (png_s, json_s) = (png.to_str().unwrap(), json.to_str().unwrap());
    let r = boot(
        &["--screenshot", png_s, "--stats-json", json_s],
        &["display", "--no-clean"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert_pattern(&png, 1280, 800);
    let v = stats(&json);
    assert!(guest_ram_at(&v, phase::FB_DRAWN).is_some());
    assert!(guest_ram_at(&v, phase::FB_CLEANED).is_none());
    // Only the small memory object was cleaned; the framebuffer's backing was kept.
    assert!(v["device"]["bytes_cleaned"].as_u64().unwrap() < 1280 * 800 * 4);
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(&json);
}

#[test]
fn the_display_option_sets_the_mode() {
    let png = scratch("640.png");
    let r = boot(
        &[
            "--display",
            "640x480",
            "--screenshot",
            png.to_str().unwrap(),
        ],
        &["display"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout
            .contains("VirtIOGpu: 640x480, EDID preferred mode 640x480"),
        "{}",
        r.dump()
    );
    assert_pattern(&png, 640, 480);
    let _ = std::fs::remove_file(&png);
}

#[test]
fn bad_display_and_screenshot_values_are_one_line_errors() {
    for (flag, val) in [
        ("--display", "0x480"),
        ("--display", "wide"),
        ("--display", "5000x100"),
        ("--screenshot", "/nonexistent/dir/x.png"),
    ] {
        let r = boot(&[flag, val], &["hello"]);
        let want = code(exit_status::VMM_ERROR);
        assert_eq!(r.code, want, "{flag} {val}: {}", r.dump());
        let line = r.stderr.trim();
        assert!(
            line.starts_with("pvgpu: error: ") && !line.contains('\n'),
            "{line}"
        );
    }
    // A guest that never shows anything: a warning, no file, the guest's status.
    let png = scratch("never.png");
    let r = boot(&["--screenshot", png.to_str().unwrap()], &["exit", "3"]);
    assert_eq!(r.code, code(3), "the guest's own status: {}", r.dump());
    assert!(r.stderr.contains("never showed anything"), "{}", r.dump());
    assert!(!png.exists());
}
