//! The Linux driver's C header (guest-driver/linux/pvgpu_protocol.h) against protocol.rs:
//! every command and response type, every constant and every struct layout the header states
//! must equal the Rust definition, and every Rust command and response type must be in the
//! header. The C compiler checks the header's layout lines against its own structs.

use core::mem::{offset_of, size_of};
use std::collections::BTreeMap;

use pvgpu_abi::protocol as p;

const HEADER: &str = include_str!("../../../guest-driver/linux/pvgpu_protocol.h");

/// `#define PVGPU_NAME value` lines with a numeric value.
fn defines() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in HEADER.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (w.next(), w.next()) else {
            continue;
        };
        let v = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => value.parse(),
        };
        if let Ok(v) = v {
            assert!(
                out.insert(name.to_string(), v).is_none(),
                "{name} defined twice"
            );
        }
    }
    out
}

/// `PVGPU_LAYOUT(struct, field, offset, size);` lines.
fn layouts() -> Vec<(String, String, usize, usize)> {
    HEADER
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PVGPU_LAYOUT(")?.strip_suffix(");"))
        .map(|args| {
            let a: Vec<&str> = args.split(',').map(str::trim).collect();
            assert_eq!(a.len(), 4, "bad layout line {args}");
            (
                a[0].to_string(),
                a[1].to_string(),
                a[2].parse().unwrap(),
                a[3].parse().unwrap(),
            )
        })
        .collect()
}

macro_rules! rust_layouts {
    ($($c:literal => $t:ty { $($cf:literal : $rf:ident),* $(,)? }),* $(,)?) => {
        /// (offset, struct size) of the Rust field that the C struct field mirrors.
        fn rust_layout(s: &str, f: &str) -> Option<(usize, usize)> {
            match (s, f) {
                $($(($c, $cf) => Some((offset_of!($t, $rf), size_of::<$t>())),)*)*
                _ => None,
            }
        }
        /// Every mirrored (C struct, C field).
        const MIRRORED: &[(&str, &str)] = &[$($(($c, $cf),)*)*];
    };
}

rust_layouts! {
    "pvgpu_hdr" => p::CtrlHdr {
        "type": type_, "flags": flags, "fence_id": fence_id, "ctx_id": ctx_id,
        "ring_idx": ring_idx,
    },
    "pvgpu_mem_entry" => p::MemEntry { "addr": addr, "length": length },
    "pvgpu_req_create" => p::ReqCreate { "object_id": object_id, "flags": flags, "size": size },
    "pvgpu_req_object" => p::ReqObject { "object_id": object_id },
    "pvgpu_req_backing" => p::ReqBacking { "object_id": object_id, "nr_entries": nr_entries },
    "pvgpu_req_transfer" => p::ReqTransfer {
        "object_id": object_id, "nr_entries": nr_entries, "offset": offset,
    },
    "pvgpu_req_range" => p::ReqRange { "object_id": object_id, "offset": offset, "length": length },
    "pvgpu_resp_info" => p::RespInfo {
        "protocol_version": protocol_version, "vram_size": vram_size,
        "max_object_size": max_object_size, "max_objects": max_objects,
        "max_sg_entries": max_sg_entries, "page_size": page_size,
    },
    "pvgpu_resp_checksum" => p::RespChecksum { "crc32c": crc32c },
    "pvgpu_resp_migrate" => p::RespMigrate { "vram_offset": vram_offset },
    "pvgpu_resp_stats" => p::RespStats {
        "objects_live": objects_live, "bytes_migrated": bytes_migrated,
        "bytes_cleaned": bytes_cleaned, "bytes_evicted": bytes_evicted,
        "vram_used": vram_used, "errors": errors,
    },
}

#[test]
fn constants_match() {
    let d = defines();
    let want: &[(&str, u64)] = &[
        ("PVGPU_VIRTIO_ID_GPU", p::VIRTIO_ID_GPU.into()),
        ("PVGPU_F_MEM", p::VIRTIO_GPU_F_PVGPU_MEM.into()),
        ("PVGPU_CONTROLQ", p::CONTROLQ.into()),
        ("PVGPU_PAGE_SIZE", p::PAGE_SIZE),
        ("PVGPU_MAX_SG_ENTRIES", p::MAX_SG_ENTRIES.into()),
        ("PVGPU_FLAG_FENCE", p::VIRTIO_GPU_FLAG_FENCE.into()),
    ];
    for (name, v) in want {
        assert_eq!(d.get(*name), Some(v), "{name}");
    }
    let mut checked = want.len();
    // Every extension command and response type of protocol.rs, by name, both ways (the
    // extension's range 0x0axx / 0x1axx), and the four virtio-gpu errors it answers with.
    // The module sends no 2D or cursor commands, so their numbers stay out of the header.
    let reused = [
        p::RESP_ERR_UNSPEC,
        p::RESP_ERR_OUT_OF_MEMORY,
        p::RESP_ERR_INVALID_OBJECT_ID,
        p::RESP_ERR_INVALID_PARAMETER,
    ];
    for t in (0x0a00u32..=0x0aff).chain(0x1a00..=0x1aff).chain(reused) {
        let c_name = match (p::command_name(t), p::response_name(t)) {
            ("unknown", "unknown") => None,
            ("unknown", r) => Some(format!("PVGPU_RESP_{r}")),
            (c, _) => Some(format!("PVGPU_CMD_{}", c.to_uppercase())),
        };
        match c_name {
            Some(n) => {
                assert_eq!(d.get(&n), Some(&u64::from(t)), "{n} should be {t:#x}");
                checked += 1;
            }
            None => assert!(
                !d.values().any(|&v| v == u64::from(t)),
                "the header defines {t:#x}, which protocol.rs does not know"
            ),
        }
    }
    // And nothing in the header that the checks above did not cover.
    assert_eq!(d.len(), checked, "unchecked defines in the header: {d:?}");
}

#[test]
fn layouts_match() {
    let l = layouts();
    assert_eq!(
        l.len(),
        MIRRORED.len(),
        "one layout line per mirrored field"
    );
    for (s, f, off, size) in &l {
        let r = rust_layout(s, f).unwrap_or_else(|| panic!("{s}.{f} has no Rust mirror"));
        assert_eq!(
            r,
            (*off, *size),
            "{s}.{f}: Rust (offset, size) vs the header's"
        );
    }
    for (s, f) in MIRRORED {
        assert!(
            l.iter().any(|(ls, lf, _, _)| ls == s && lf == f),
            "{s}.{f} has no layout line"
        );
    }
}
