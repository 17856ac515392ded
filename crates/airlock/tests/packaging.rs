//! The service a plant installs: the systemd unit (`packaging/airlock.service`) verifies and
//! its exposure is "OK" or better (where `systemd-analyze` exists), and `airlock run` speaks
//! systemd's notify protocol: READY=1 once running, WATCHDOG=1 while the collector ticks,
//! RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-pkg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_unit_verifies_and_its_exposure_is_ok() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit is not checked here");
        return;
    }
    let dir = temp_dir("unit");
    // verify wants the binary the unit names to exist: this build's.
    let unit = std::fs::read_to_string(root().join("packaging/airlock.service")).unwrap();
    let path = dir.join("airlock.service");
    std::fs::write(&path, unit.replace("/usr/bin/airlock", env!("CARGO_BIN_EXE_airlock"))).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !said.contains("airlock.service"), "{said}");
    let security = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{report}"));
    let score: f64 = overall.split(": ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(overall.contains(" OK") || overall.contains(" SAFE"), "{overall}");
    // docs/operations.md states the figure; keep it true.
    let docs = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    assert!(docs.contains(&format!("exposure level {score:.1}")), "docs/operations.md does not say {score:.1}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let file = dir.join("plant.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\ndata_dir = \"{}\"\n\n[[device]]\nname = \"press1\"\nasset_path = \"acme/press1\"\nprotocol = \"modbus_tcp\"\n\
             address = \"127.0.0.1:1\"\n\n[[device.tag]]\nname = \"speed\"\nspace = \"input_register\"\naddress = 0\ntype = \"u16\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: a shell that execs the gateway knows it.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run \"$1\"", env!("CARGO_BIN_EXE_airlock"), file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    let mut wait_for = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !said.iter().any(|m: &String| m.contains(text)) {
            assert!(Instant::now() < deadline, "systemd was not told {text:?}; it was told {said:?}");
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        std::mem::take(&mut said)
    };
    let ready = wait_for("READY=1");
    assert!(ready.iter().any(|m| m.contains("STATUS=running 1 devices")), "{ready:?}");
    // Pinged at half of WATCHDOG_USEC, twice in a row: the collector ticks.
    wait_for("WATCHDOG=1");
    wait_for("WATCHDOG=1");
    let kill = |signal: &str| {
        assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success())
    };
    kill("-HUP");
    wait_for("RELOADING=1");
    wait_for("READY=1");
    kill("-TERM");
    wait_for("STOPPING=1");
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `program args`, failing the test with its output if it fails.
fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The owner, group and mode of `path`, as `stat` says them.
fn owner_and_mode(path: &str) -> String {
    must("stat", &["-c", "%U:%G %a", path]).trim().to_owned()
}

#[test]
fn the_debian_package_installs_the_gateway_its_unit_config_and_user_and_purges_clean() {
    let root_user = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root_user || Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("not root, or no dpkg: the package is not installed here");
        return;
    }
    if Command::new("dpkg-query").args(["-W", "-f", "${Status}", "airlock"]).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains("installed")
            && !String::from_utf8_lossy(&o.stdout).contains("not-installed")
    }) {
        eprintln!("a package named airlock is installed on this machine already: left alone, not tested");
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo).args(["deb", "--version"]).output().is_ok_and(|o| o.status.success());
    assert!(has_deb, "cargo-deb is not installed: run ./scripts/test, which installs it");
    let dir = temp_dir("deb");
    let deb = dir.join("airlock.deb");
    let built = Command::new(&cargo)
        .args(["deb", "-p", "airlock", "--no-build", "--profile", "dev", "--fast", "--output"])
        .arg(&deb)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(built.status.success(), "cargo deb: {}", String::from_utf8_lossy(&built.stderr));

    let contents = must("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    for path in
        ["./usr/bin/airlock", "./etc/airlock/airlock.toml", "airlock.service", "./usr/share/doc/airlock/operations.md"]
    {
        assert!(contents.contains(path), "{path} not in the package:\n{contents}");
    }
    let conffiles = must("dpkg-deb", &["--info", deb.to_str().unwrap(), "conffiles"]);
    assert!(conffiles.lines().any(|l| l == "/etc/airlock/airlock.toml"), "not a conffile: {conffiles}");

    must("dpkg", &["-i", deb.to_str().unwrap()]);
    let installed = std::panic::catch_unwind(|| {
        let user = must("getent", &["passwd", "airlock"]);
        assert!(user.contains(":/var/lib/airlock:") && user.trim_end().ends_with("nologin"), "{user}");
        assert_eq!(owner_and_mode("/etc/airlock/airlock.toml"), "root:airlock 640");
        assert_eq!(owner_and_mode("/etc/airlock"), "root:airlock 750");
        let unit = ["/lib/systemd/system/airlock.service", "/usr/lib/systemd/system/airlock.service"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the unit is installed");
        assert!(std::fs::read_to_string(unit).unwrap().contains("Type=notify"));
        // The installed gateway runs, and its packaged config is refused only for having no device.
        assert!(must("/usr/bin/airlock", &["--version"]).starts_with("airlock "));
        let check = Command::new("/usr/bin/airlock").args(["check", "/etc/airlock/airlock.toml"]).output().unwrap();
        let said = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1));
        assert!(said.contains("1 problem") && said.contains("no [[device]] is configured"), "{said}");
    });
    must("dpkg", &["-P", "airlock"]);
    assert!(!Path::new("/usr/bin/airlock").exists());
    assert!(!Path::new("/etc/airlock").exists(), "purge leaves /etc/airlock");
    assert!(
        Command::new("getent").args(["passwd", "airlock"]).output().unwrap().stdout.is_empty(),
        "purge leaves the user"
    );
    if let Err(e) = installed {
        std::panic::resume_unwind(e);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_container_builds_where_a_builder_answers() {
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        eprintln!("no container builder answers here (docker info): packaging/Containerfile is not built");
        return;
    }
    let tag = format!("airlock-test:{}", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-f", "packaging/Containerfile", "-t", &tag, "."])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(built.success());
    let out = must("docker", &["run", "--rm", &tag, "--version"]);
    assert!(out.starts_with("airlock "), "{out}");
    let _ = Command::new("docker").args(["rmi", &tag]).status();
}
