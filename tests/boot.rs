//! Boot the guest kernel under KVM and check what it does: exit codes, output, faults,
//! timeouts, repeated boots.

mod common;

use common::exit_status::{self, guest_fault, vector};
use common::{boot, code};

#[test]
fn guest_exit_status_becomes_the_vmm_exit_status() {
    for n in ["7", "0", "255"] {
        let r = boot(&[], &["exit", n]);
        assert_eq!(r.code, Some(n.parse().unwrap()), "{}", r.dump());
    }
}

#[test]
fn hello_prints_its_line() {
    let r = boot(&[], &["hello"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout
            .contains("Hello from the pvgpu guest: ring 3 on vCPU 0 of 1, 256 MiB of RAM"),
        "{}",
        r.dump()
    );
}

#[test]
fn selftest_passes_on_one_vcpu() {
    let r = boot(&["--vcpus", "1"], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout.contains("selftest: 1 of 1 vCPUs passed"),
        "{}",
        r.dump()
    );
    assert!(r.stdout.contains("selftest: PASS"), "{}", r.dump());
}

#[test]
fn selftest_passes_on_two_vcpus() {
    let r = boot(&["--vcpus", "2"], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout.contains("[selftest cpu 1]"),
        "vCPU 1 did not run: {}",
        r.dump()
    );
    assert!(
        r.stdout.contains("selftest: 2 of 2 vCPUs passed"),
        "{}",
        r.dump()
    );
}

#[test]
fn unknown_guest_command_is_a_usage_error() {
    let r = boot(&[], &["no-such-workload"]);
    assert_eq!(r.code, code(exit_status::USAGE), "{}", r.dump());
    assert!(r.stdout.contains("usage:"), "{}", r.dump());
}

#[test]
fn ring0_page_fault_is_reported() {
    let r = boot(&[], &["fault-ring0", "pf"]);
    assert_eq!(r.code, code(guest_fault(vector::PF)), "{}", r.dump());
    assert!(
        r.stdout
            .contains("FATAL #PF page fault (vector 14) at ring 0"),
        "{}",
        r.dump()
    );
    assert!(r.stdout.contains("cr2=0x0"), "{}", r.dump());
}

#[test]
fn ring0_invalid_opcode_is_reported() {
    let r = boot(&[], &["fault-ring0", "ud"]);
    assert_eq!(r.code, code(guest_fault(vector::UD)), "{}", r.dump());
    assert!(
        r.stdout
            .contains("FATAL #UD invalid opcode (vector 6) at ring 0"),
        "{}",
        r.dump()
    );
}

#[test]
fn ring3_fault_without_handler_is_reported() {
    let r = boot(&[], &["fault-ring3"]);
    assert_eq!(r.code, code(guest_fault(vector::PF)), "{}", r.dump());
    assert!(r.stdout.contains("at ring 3"), "{}", r.dump());
    assert!(r.stdout.contains("cr2=0x8000000000"), "{}", r.dump());
}

#[test]
fn triple_fault_gets_a_clear_report() {
    let r = boot(&[], &["fault-ring0", "triple"]);
    assert_eq!(r.code, code(exit_status::TRIPLE_FAULT), "{}", r.dump());
    let e = r.stderr.to_lowercase();
    assert!(e.contains("triple fault"), "{}", r.dump());
    assert!(e.contains("rip"), "{}", r.dump());
    // The instruction bytes at RIP: the ud2 (0f 0b) that faulted.
    assert!(e.contains("0f 0b"), "{}", r.dump());
}

#[test]
fn timeout_ends_a_spinning_guest() {
    let r = boot(&["--timeout", "2"], &["spin"]);
    assert_eq!(r.code, code(exit_status::TIMEOUT), "{}", r.dump());
    assert!(r.stderr.contains("timed out"), "{}", r.dump());
    assert!(r.elapsed.as_secs_f64() < 10.0, "took {:?}", r.elapsed);
}

#[test]
fn timeout_ends_a_spinning_guest_with_parked_vcpus() {
    let r = boot(&["--timeout", "2", "--vcpus", "2"], &["spin"]);
    assert_eq!(r.code, code(exit_status::TIMEOUT), "{}", r.dump());
    assert!(r.elapsed.as_secs_f64() < 10.0, "took {:?}", r.elapsed);
}

#[test]
fn twenty_boots_in_a_row() {
    for i in 0..20u8 {
        let vcpus = if i % 2 == 0 { "1" } else { "2" };
        let r = boot(
            &["--vcpus", vcpus, "--timeout", "20"],
            &["exit", &i.to_string()],
        );
        assert_eq!(r.code, code(i), "boot {i}: {}", r.dump());
    }
}

#[test]
fn an_instruction_the_emulator_lacks_gets_a_clear_report() {
    let r = boot(&[], &["fault-ring0", "emulator"]);
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        // PVM interprets ring 0: int3 is not in KVM's emulator.
        assert_eq!(r.code, code(exit_status::INTERNAL_ERROR), "{}", r.dump());
        let e = r.stderr.to_lowercase();
        assert!(e.contains("emulation failure"), "{}", r.dump());
        assert!(e.contains("rip=") && e.contains("cr3="), "{}", r.dump());
        // The instruction bytes at RIP start with the int3 (cc).
        let code = e
            .lines()
            .find(|l| l.contains("code at rip"))
            .unwrap_or_default();
        assert!(
            code.split(": ").nth(1).is_some_and(|b| b.starts_with("cc")),
            "{}",
            r.dump()
        );
    } else {
        // With VMX/SVM the int3 runs and the guest's own #BP report ends it.
        assert_eq!(r.code, code(guest_fault(vector::BP)), "{}", r.dump());
        assert!(r.stdout.contains("#BP"), "{}", r.dump());
    }
}

#[test]
fn ring3_stack_overflow_hits_its_guard_page() {
    for vcpus in ["1", "2"] {
        let r = boot(&["--vcpus", vcpus], &["stack-overflow"]);
        assert_eq!(r.code, code(guest_fault(vector::PF)), "{}", r.dump());
        assert!(
            r.stdout
                .contains("FATAL #PF page fault (vector 14) at ring 3"),
            "{}",
            r.dump()
        );
        // The fault is right at the stack pointer (in the guard page below the stack), not
        // anywhere else in memory.
        let cr2 =
            r.stdout.split("cr2=0x").nth(1).and_then(|s| {
                u64::from_str_radix(s.split_whitespace().next().unwrap_or(""), 16).ok()
            });
        let rsp =
            r.stdout.split("rsp=0x").nth(1).and_then(|s| {
                u64::from_str_radix(s.split_whitespace().next().unwrap_or(""), 16).ok()
            });
        let (cr2, rsp) = (cr2.expect("cr2"), rsp.expect("rsp"));
        assert!(cr2.abs_diff(rsp) < 4096, "cr2 {cr2:#x} rsp {rsp:#x}");
    }
}

#[test]
fn ring0_stack_overflow_is_a_reported_double_fault() {
    let r = boot(&[], &["fault-ring0", "stack"]);
    assert_eq!(r.code, code(guest_fault(vector::DF)), "{}", r.dump());
    assert!(
        r.stdout
            .contains("FATAL #DF double fault (vector 8) at ring 0 on cpu 0"),
        "{}",
        r.dump()
    );
}
