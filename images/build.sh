#!/usr/bin/env bash
# Builds the pvgpu guest kernel ELF to images/out/pvgpu-guest, then the Linux guest (a User-Mode
# Linux kernel, the pvgpu module and its initramfs) with images/build-linux.sh.
# Idempotent: cargo rebuilds only what changed, the copy is skipped when identical, and the Linux
# guest is cached by the hash of its sources.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in cargo rustup; do
    command -v "$tool" >/dev/null || { echo "images/build.sh: $tool is missing: install rustup (https://rustup.rs); rust-toolchain.toml then installs the pinned toolchain and target" >&2; exit 1; }
done
# rust-toolchain.toml pins the toolchain and the guest target. rustup installs them on first use
# only when auto-install is on (RUSTUP_AUTO_INSTALL=0 is common in CI images), so install both
# here explicitly: a no-op when they are already there.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")
if ! (cd "$root" && rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy --target x86_64-unknown-none >/dev/null 2>&1); then
    echo "images/build.sh: could not install Rust $toolchain with target x86_64-unknown-none: run 'rustup toolchain install $toolchain --target x86_64-unknown-none --component rustfmt,clippy'" >&2
    exit 1
fi
command -v cc >/dev/null || { echo "images/build.sh: no C compiler/linker (cc) for the host build: apt-get install build-essential" >&2; exit 1; }
for tool in objdump nm; do
    command -v "$tool" >/dev/null || { echo "images/build.sh: $tool is missing (it checks the guest image): apt-get install binutils" >&2; exit 1; }
done
out="$root/images/out"
mkdir -p "$out"
profile=${PVGPU_GUEST_PROFILE:-release}
(cd "$root/guest-driver" && cargo build --quiet --profile "$profile")
elf="$root/guest-driver/target/x86_64-unknown-none/$profile/pvgpu-guest"
if ! cmp -s "$elf" "$out/pvgpu-guest"; then
    cp "$elf" "$out/pvgpu-guest.tmp"
    mv "$out/pvgpu-guest.tmp" "$out/pvgpu-guest"
fi
# The instructions KVM's emulator lacks must not appear in the guest's code at all (ring 0
# runs in the emulator on PVM). int3 padding between functions is never executed.
bad=$(objdump -d "$out/pvgpu-guest" | grep -E $'\t(xsave|xrstor|popcnt|fwait|clac|stac|movaps|movups|movdq)' || true)
if [ -n "$bad" ]; then
    echo "images/build.sh: the guest contains instructions KVM's emulator lacks:" >&2
    echo "$bad" | head -5 >&2
    exit 1
fi
# Every indirect call through memory (the GOT) must read a slot ring 3 cannot write: one below
# __readonly_end. A writable slot would let ring 3 redirect ring 0's calls to its own code.
ro_end=$(nm "$out/pvgpu-guest" | awk '$3 == "__readonly_end" {print $1}')
bad=""
for slot in $(objdump -d -M intel "$out/pvgpu-guest" \
    | grep -oE 'call +QWORD PTR \[rip\+0x[0-9a-f]+\] +# [0-9a-f]+' | awk '{print $NF}' | sort -u); do
    if [ $((16#$slot)) -ge $((16#${ro_end:-0})) ]; then bad="$bad $slot"; fi
done
if [ -z "$ro_end" ] || [ -n "$bad" ]; then
    echo "images/build.sh: indirect calls through writable memory (or no __readonly_end):" >&2
    echo "$bad" >&2
    exit 1
fi
echo "images/out/pvgpu-guest ($(stat -c %s "$out/pvgpu-guest") bytes)"
bash "$root/images/build-linux.sh"
