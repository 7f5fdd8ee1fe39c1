//! The whole life of a small lab on libvirtd's test driver, through the CLI: plan, apply, a no-op
//! re-plan, a changed attribute planned and applied, saved plans, drift, and destroy leaving nothing.

use crate::support::{DestroyOnDrop, TestDriver, Workspace, TEST_URI};

/// A host, a network and two guests, with names unique to `tag` so tests can share the daemon.
fn lab(tag: &str, memory: &str) -> String {
    format!(
        r#"
kvm_host "l0" {{
  uri = "{TEST_URI}"
}}

nat_network "lan" {{
  host = kvm_host.l0
  name = "{tag}-lan"
  cidr = var.cidr
}}

variable "cidr" {{
  default = "10.91.0.0/24"
}}

nested_guest "web" {{
  count  = 2
  host   = kvm_host.l0
  name   = "{tag}-web-${{count.index}}"
  vcpus  = 1
  memory = "{memory}"

  disk "root" {{
    size  = "1GiB"
    cache = "unsafe"
  }}

  network "nic" {{
    nat_network = nat_network.lan
  }}
}}

output "first_web" {{
  value = nested_guest.web[0].name
}}
"#
    )
}

#[test]
fn plan_apply_noop_update_destroy() {
    let _turn = crate::killed::shared_test_driver();
    let driver = TestDriver::connect();
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab("e2e1", "256MiB"));
    let _cleanup = DestroyOnDrop(&ws);

    // A fresh plan proposes everything, and -detailed-exitcode says so with 2.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("Plan: 4 to add, 0 to change, 0 to replace, 0 to destroy."), "{}", r.stdout);
    assert!(r.stdout.contains("(known after apply)"), "{}", r.stdout);

    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    assert!(r.stdout.contains("Apply complete!"), "{}", r.stdout);
    let domains = driver.domains();
    assert!(
        domains.contains(&"e2e1-web-0".to_string()) && domains.contains(&"e2e1-web-1".to_string()),
        "{domains:?}"
    );
    assert!(driver.networks().contains(&"e2e1-lan".to_string()));
    let xml = driver.domain_xml("e2e1-web-0");
    assert!(xml.contains("nested_guest.web[0]"), "the domain carries its resource address:\n{xml}");
    assert!(xml.contains("dev.nestform.agent.0"), "the domain has the agent channel:\n{xml}");
    assert!(driver.domain_active("e2e1-web-0"));

    // Outputs and state commands see what was applied.
    let r = ws.run(&["output", "-raw", "first_web"]);
    r.success();
    assert_eq!(r.stdout.trim(), "e2e1-web-0");
    let r = ws.run(&["state", "list"]);
    r.success();
    for addr in ["kvm_host.l0", "nat_network.lan", "nested_guest.web[0]", "nested_guest.web[1]"] {
        assert!(r.stdout.lines().any(|l| l == addr), "{addr} missing from:\n{}", r.stdout);
    }

    // Nothing changed: no-op, exit 0.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(0);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);

    // Memory changes need a restart; the plan says so and apply does it.
    ws.write("main.nf.hcl", &lab("e2e1", "512MiB"));
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("Plan: 0 to add, 2 to change, 0 to replace, 0 to destroy."), "{}", r.stdout);
    assert!(r.stdout.contains("restart"), "{}", r.stdout);
    assert!(r.stdout.contains("524288"), "the domain XML diff shows the new memory:\n{}", r.stdout);
    ws.run(&["apply", "-auto-approve"]).success();
    assert!(driver.domain_xml("e2e1-web-1").contains("524288"), "{}", driver.domain_xml("e2e1-web-1"));
    ws.run(&["plan", "-detailed-exitcode"]).code(0);

    // Destroy leaves nothing of ours behind.
    let r = ws.run(&["destroy", "-auto-approve"]);
    r.success();
    assert!(!driver.domains().iter().any(|d| d.starts_with("e2e1-")), "{:?}", driver.domains());
    assert!(!driver.networks().iter().any(|n| n.starts_with("e2e1-")), "{:?}", driver.networks());
    assert!(!driver.volumes().iter().any(|v| v.starts_with("e2e1-")), "{:?}", driver.volumes());
    ws.run(&["plan", "-detailed-exitcode"]).code(2);
}

#[test]
fn saved_plans_apply_exactly_and_refuse_when_stale() {
    let _turn = crate::killed::shared_test_driver();
    let driver = TestDriver::connect();
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab("e2e2", "256MiB").replace("10.91.0.0/24", "10.92.0.0/24"));
    let _cleanup = DestroyOnDrop(&ws);

    ws.run(&["plan", "-out", "first.plan"]).success();
    ws.run(&["plan", "-out", "second.plan"]).success();
    let r = ws.run(&["show", "-json", "first.plan"]);
    r.success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("show -json prints JSON");
    let changes = json["resource_changes"].as_array().expect("resource_changes");
    let web0 = changes.iter().find(|c| c["address"] == "nested_guest.web[0]").expect("web[0] in the plan");
    assert_eq!(web0["type"], "nested_guest");
    assert_eq!(web0["name"], "web");
    assert_eq!(web0["change"]["actions"], serde_json::json!(["create"]));
    assert_eq!(web0["change"]["after"]["memory"], "256MiB");

    // A saved plan applies without asking.
    ws.run(&["apply", "first.plan"]).success();
    assert!(driver.domains().contains(&"e2e2-web-1".to_string()));

    // The state moved on: the second plan was made against the old one and is refused, touching nothing.
    let before = ws.read("nestform.state.json");
    let r = ws.run(&["apply", "second.plan"]);
    r.code(1);
    assert!(r.stderr.contains("stale"), "{}", r.stderr);
    assert_eq!(ws.read("nestform.state.json"), before);
}

#[test]
fn a_guest_stopped_outside_nestform_is_planned_to_start() {
    let _turn = crate::killed::shared_test_driver();
    let driver = TestDriver::connect();
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab("e2e3", "256MiB").replace("10.91.0.0/24", "10.93.0.0/24"));
    let _cleanup = DestroyOnDrop(&ws);
    ws.run(&["apply", "-auto-approve"]).success();

    driver.stop_domain("e2e3-web-1");
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("nested_guest.web[1]"), "{}", r.stdout);
    assert!(r.stdout.contains("running"), "{}", r.stdout);
    ws.run(&["apply", "-auto-approve"]).success();
    assert!(driver.domain_active("e2e3-web-1"));
    ws.run(&["plan", "-detailed-exitcode"]).code(0);
}

#[test]
fn a_second_command_on_the_same_state_is_refused() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab("e2e4", "256MiB"));
    // Hold the lock the way a running apply does: with the state crate, from this process.
    let store = nestform_state_lock(&ws);
    let r = ws.run(&["plan"]);
    r.code(1);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    drop(store);
    // Once released, planning works (the test driver is not needed for the lock check above).
}

fn nestform_state_lock(ws: &Workspace) -> impl Drop {
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // `nestform apply` without -auto-approve waits at its prompt while holding the lock; its stdin is a
    // pipe we never write to.
    let child = std::process::Command::new(crate::support::nestform_bin())
        .arg(format!("-chdir={}", ws.path().display()))
        .args(["apply"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting nestform apply");
    // Wait until it holds the lock.
    let lock = ws.path().join("nestform.state.json.lock");
    for _ in 0..200 {
        if lock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lock.exists(), "the first command never took the lock");
    Holder(child)
}

#[test]
fn a_targeted_apply_leaves_outputs_of_what_it_left_out_alone() {
    let _turn = crate::killed::shared_test_driver();
    let _driver = TestDriver::connect();
    let ws = Workspace::new();
    ws.write(
        "main.nf.hcl",
        &format!(
            r#"
kvm_host "l0" {{
  uri = "{TEST_URI}"
}}

nested_guest "g" {{
  host   = kvm_host.l0
  name   = "e2etarget-g"
  vcpus  = 1
  memory = "128MiB"
}}

benchmark "loop" {{
  kind    = "shell_loop"
  targets = [nested_guest.g]
}}

output "name" {{
  value = nested_guest.g.name
}}

output "results" {{
  value = benchmark.loop.results
}}
"#
        ),
    );
    let _cleanup = DestroyOnDrop(&ws);

    ws.run(&["apply", "-auto-approve", "-target=nested_guest.g"]).success();
    assert!(ws.read("nestform.state.json").contains("e2etarget-g"));
    // The benchmark was left out and never ran: its output is neither planned nor a change.
    let r = ws.run(&["plan", "-detailed-exitcode", "-target=nested_guest.g"]);
    r.code(0);
    assert!(!r.stdout.contains("results"), "{}", r.stdout);
    // Without the target the benchmark and its output are what is left to do.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("benchmark.loop") && r.stdout.contains("+ results"), "{}", r.stdout);
}
