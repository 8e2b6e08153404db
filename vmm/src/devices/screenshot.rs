//! `pvgpu run --screenshot PATH`: the scanout as a PNG, written when the guest flushes the
//! resource on the scanout (at most every [`MIN_INTERVAL`]; a flush inside that window is
//! written once the window has passed) and once more at exit. Each write goes to a temporary
//! file next to PATH, then is renamed over it, so a reader never sees half a picture.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvgpu_device::ScanoutImage;

/// Shortest time between two PNG writes triggered by flushes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Errors writing a screenshot.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// Creating, writing or renaming the file failed.
    #[error("cannot write screenshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PNG encoding failed.
    #[error("cannot encode screenshot {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        source: png::EncodingError,
    },
}

/// Writes `image` to `path` as an 8-bit RGB PNG, through a temporary file and a rename.
pub fn write_png(path: &Path, image: &ScanoutImage) -> Result<(), ScreenshotError> {
    let io = |source| ScreenshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let encode = |source| ScreenshotError::Encode {
        path: path.to_path_buf(),
        source,
    };
    crate::atomic_file::write_with(
        path,
        |tmp| {
            let file = std::fs::File::create(tmp).map_err(io)?;
            let mut enc = png::Encoder::new(BufWriter::new(file), image.width, image.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            // Speed over size: this runs on the device thread.
            enc.set_compression(png::Compression::Fast);
            let mut w = enc.write_header().map_err(encode)?;
            w.write_image_data(&image.rgb).map_err(encode)?;
            w.finish().map_err(encode)
        },
        io,
    )
}

/// When to write: tracks the scanout's flush counter and the last write.
#[derive(Debug)]
pub struct Screenshot {
    path: PathBuf,
    seen_flushes: u64,
    last_write: Option<Instant>,
    pending: bool,
    written: u64,
}

impl Screenshot {
    /// Screenshots to `path`.
    pub fn new(path: PathBuf) -> Self {
        Screenshot {
            path,
            seen_flushes: 0,
            last_write: None,
            pending: false,
            written: 0,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// PNGs written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether a picture is due now, given the device's flush counter: the counter moved
    /// (or an earlier flush is still unwritten) and the last write is old enough.
    pub fn due(&mut self, flushes: u64, now: Instant) -> bool {
        if flushes != self.seen_flushes {
            self.seen_flushes = flushes;
            self.pending = true;
        }
        self.pending
            && self
                .last_write
                .is_none_or(|t| now.duration_since(t) >= MIN_INTERVAL)
    }

    /// Writes `image` (taken when [`Self::due`] said so, or at exit).
    pub fn write(&mut self, image: &ScanoutImage, now: Instant) -> Result<(), ScreenshotError> {
        self.pending = false;
        self.last_write = Some(now);
        write_png(&self.path, image)?;
        self.written += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ScanoutImage {
        ScanoutImage {
            width: 3,
            height: 2,
            rgb: (0..18).collect(),
        }
    }

    #[test]
    fn writes_a_png_that_decodes_to_the_same_pixels() {
        let dir = std::env::temp_dir().join(format!("pvgpu-shot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.png");
        write_png(&path, &image()).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..18], &image().rgb[..]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        // A directory that does not exist is an error, not a panic.
        let bad = dir.join("missing/s.png");
        assert!(matches!(
            write_png(&bad, &image()),
            Err(ScreenshotError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flushes_are_rate_limited_but_never_lost() {
        let mut s = Screenshot::new(PathBuf::from("/nonexistent/x.png"));
        let t0 = Instant::now();
        assert!(!s.due(0, t0), "no flush yet");
        assert!(s.due(1, t0));
        let _ = s.write(&image(), t0);
        assert!(!s.due(1, t0), "nothing new");
        // A flush right after a write waits for the interval, then is due without another.
        assert!(!s.due(2, t0 + Duration::from_millis(10)));
        assert!(s.due(2, t0 + MIN_INTERVAL));
    }
}
