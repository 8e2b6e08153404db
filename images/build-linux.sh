#!/usr/bin/env bash
# Builds the Linux guest for User-Mode Linux:
#   images/out/linux-uml             the UML kernel (ARCH=um, tinyconfig + images/linux/uml.config)
#   images/out/pvgpu.ko              the pvgpu driver module (guest-driver/linux)
#   images/out/linux-initramfs.cpio  its root file system: /init = the static test program
#                                    (guest-driver/linux/test), /pvgpu.ko, /dev/console
# The kernel source is Debian's newest linux-source-X.Y package (/usr/src/linux-source-X.Y.tar.xz),
# with the patches in images/linux/*.patch: uml-xstate-size.patch (UML 6.1 cannot run user
# processes on hosts whose XSAVE area is larger than its buffer, e.g. with AMX) and
# virtio-uml-mem-table-size.patch (SET_MEM_TABLE's payload holds exactly its regions, which
# rust-vmm's vhost crate checks).
# Cached by hash: the kernel is rebuilt only when the source tarball, the config fragment, the
# patches or the recipe version change, the module only when its sources (or the kernel) change.
# Run as root, it installs the Debian packages it needs with apt-get; otherwise it prints the one
# apt-get line to run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/images/out"
work="$out/linux"
jobs=${PVGPU_LINUX_JOBS:-2}
say() { echo "images/build-linux.sh: $*" >&2; }
start=$(date +%s)

# Tools and the Debian packages that provide them.
need=()
for pair in make:make gcc:gcc flex:flex bison:bison bc:bc xz:xz-utils perl:perl patch:patch; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -e /usr/include/stdio.h ] && [ -n "$(gcc -print-file-name=libc.a 2>/dev/null | grep /)" ] || need+=(libc6-dev)
src_tar=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$src_tar" ]; then
    pkg=$(apt-cache search --names-only '^linux-source-[0-9.]+$' 2>/dev/null | awk '{print $1}' | sort -V | tail -1 || true)
    need+=("${pkg:-linux-source-6.1}")
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need[*]} with apt-get"
        log=$(mktemp)
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$log" 2>&1 &&
            ! { apt-get update -q >"$log" 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$log" 2>&1; }; then
            tail -5 "$log" >&2
            say "apt-get install ${need[*]} failed"
            rm -f "$log"
            exit 1
        fi
        rm -f "$log"
        src_tar=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)
    else
        for pkg in "${need[@]}"; do
            say "$pkg is missing: run 'apt-get install $pkg' (as root)"
        done
        exit 1
    fi
fi
[ -n "$src_tar" ] || { say "no /usr/src/linux-source-*.tar.xz: run 'apt-get install linux-source-6.1'"; exit 1; }
mkdir -p "$work"

# The kernel.
fragment="$root/images/linux/uml.config"
patches=("$root"/images/linux/*.patch)
# Bump when the kernel recipe below changes (edits elsewhere in this script keep the cache).
kernel_recipe=1
kernel_hash=$( { echo "$kernel_recipe"; sha256sum "$src_tar" | cut -d' ' -f1; cat "$fragment" "${patches[@]}"; } | sha256sum | cut -c1-16)
ksrc="$work/kernel-$kernel_hash"
if [ "$(cat "$work/kernel.stamp" 2>/dev/null)" != "$kernel_hash" ] || [ ! -x "$out/linux-uml" ]; then
    rm -rf "$work"/kernel-* "$work/kernel.stamp"
    say "building the UML kernel from $(basename "$src_tar") (make -j$jobs; a few minutes)"
    mkdir -p "$ksrc"
    tar -xJf "$src_tar" -C "$ksrc" --strip-components=1
    for p in "${patches[@]}"; do
        patch -s -d "$ksrc" -p1 <"$p" || { say "$(basename "$p") does not apply to $(basename "$src_tar")"; exit 1; }
    done
    (
        cd "$ksrc"
        make -s ARCH=um tinyconfig >/dev/null
        scripts/kconfig/merge_config.sh -m -O . .config "$fragment" >/dev/null
        make -s ARCH=um olddefconfig >/dev/null
    )
    # Every line of the fragment must have survived Kconfig's dependency resolution.
    missing=$(grep '^CONFIG_' "$fragment" | while read -r line; do
        grep -qxF "$line" "$ksrc/.config" || echo "$line"
    done)
    if [ -n "$missing" ]; then
        say "Kconfig dropped these options from $fragment: $missing"
        exit 1
    fi
    if ! make -C "$ksrc" ARCH=um -j"$jobs" >"$work/kernel-build.log" 2>&1; then
        tail -20 "$work/kernel-build.log" >&2
        say "the kernel build failed (full log: $work/kernel-build.log)"
        exit 1
    fi
    cp "$ksrc/linux" "$out/linux-uml.tmp"
    mv "$out/linux-uml.tmp" "$out/linux-uml"
    echo "$kernel_hash" >"$work/kernel.stamp"
fi

# The module, built out of tree in a copy (kbuild writes its objects next to the sources).
mod_src="$root/guest-driver/linux"
mod_hash=$( { echo "$kernel_hash"; cat "$mod_src"/Kbuild "$mod_src"/*.c "$mod_src"/*.h; } | sha256sum | cut -c1-16)
if [ "$(cat "$work/module.stamp" 2>/dev/null)" != "$mod_hash" ] || [ ! -f "$out/pvgpu.ko" ]; then
    rm -rf "$work/module"
    mkdir -p "$work/module"
    cp "$mod_src"/Kbuild "$mod_src"/*.c "$mod_src"/*.h "$work/module/"
    if ! make -C "$ksrc" ARCH=um M="$work/module" W=1 modules >"$work/module-build.log" 2>&1; then
        cat "$work/module-build.log" >&2
        say "the module build failed"
        exit 1
    fi
    if grep -E 'warning:' "$work/module-build.log" >&2; then
        say "the module build has warnings"
        exit 1
    fi
    cp "$work/module/pvgpu.ko" "$out/pvgpu.ko"
    echo "$mod_hash" >"$work/module.stamp"
fi

# The test program (static: UML runs x86_64 binaries natively) and the initramfs.
test_src="$root/guest-driver/linux/test/pvgpu_test.c"
gcc -static -O2 -Wall -Wextra -Werror -o "$work/pvgpu_test" "$test_src"
cat >"$work/initramfs.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
file /init $work/pvgpu_test 0755 0 0
file /pvgpu.ko $out/pvgpu.ko 0644 0 0
LIST
"$ksrc/usr/gen_init_cpio" "$work/initramfs.list" >"$out/linux-initramfs.cpio.tmp"
mv "$out/linux-initramfs.cpio.tmp" "$out/linux-initramfs.cpio"
echo "images/out/linux-uml, images/out/pvgpu.ko, images/out/linux-initramfs.cpio ($(( $(date +%s) - start )) s)"
