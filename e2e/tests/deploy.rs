//! Proves `deploy/` against the tools that judge it and against our own binaries, so the
//! manifests cannot drift from the code: every Kubernetes manifest passes `kubernetes-validate
//! --strict`, every YAML file of the repository passes `yamllint --strict`, the systemd units
//! pass `systemd-analyze verify`, docker-compose services name real images, Dockerfiles, ports
//! and flags, and every `--flag` and `TALLY_*` variable given to a Tally binary anywhere in
//! `deploy/` is one that binary's `--help` lists.
//!
//! The Python tools come from the venv of `scripts/test` (`$TALLY_PYTHON`'s directory).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A tool installed beside the venv's Python.
fn venv_tool(name: &str) -> PathBuf {
    let tool = testkit::sdk::python().parent().unwrap().join(name);
    assert!(tool.exists(), "{} is missing: scripts/test installs python/requirements.txt into .venv", tool.display());
    tool
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn every_kubernetes_manifest_is_valid() {
    let manifests = files(&root().join("deploy/kubernetes"), &[".yaml"]);
    assert_eq!(manifests.len(), 12, "{manifests:#?}");
    let resources: usize = manifests.iter().map(|m| documents(m).len()).sum();
    assert_eq!(resources, 32);
    let (ok, stdout, stderr) = run(Command::new(venv_tool("kubernetes-validate")).arg("--strict").args(&manifests));
    assert!(ok, "kubernetes-validate failed:\n{stdout}{stderr}");
    // One "passed" line per resource, and every file among them.
    let passed: Vec<&str> =
        stdout.lines().chain(stderr.lines()).filter(|l| l.contains(" passed for resource ")).collect();
    assert_eq!(passed.len(), resources, "{stdout}{stderr}");
    for m in &manifests {
        let name = m.to_string_lossy();
        assert!(passed.iter().any(|l| l.contains(&*name)), "{name} was not validated:\n{stdout}{stderr}");
    }
}

#[test]
fn every_yaml_file_passes_yamllint() {
    let yamllint = venv_tool("yamllint");
    // The files yamllint picks itself (it honours .yamllint.yaml's ignores: target/, .venv/).
    let (ok, listed, stderr) = run(Command::new(&yamllint).arg("--list-files").arg(".").current_dir(root()));
    assert!(ok, "{stderr}");
    let listed: Vec<&str> = listed.lines().collect();
    let in_deploy = listed.iter().filter(|f| f.starts_with("./deploy/")).count();
    assert_eq!(in_deploy, files(&root().join("deploy"), &[".yaml", ".yml"]).len());
    assert_eq!(in_deploy, 13, "{listed:#?}");
    // yamllint's own selection misses no YAML file of the repository.
    let mut ours = Vec::new();
    let skip = ["target", ".venv", ".tally", ".git"];
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() && !skip.contains(&name.as_str()) {
                stack.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                ours.push(format!("./{}", path.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    let (mut ours, mut listed_sorted) = (ours, listed.clone());
    ours.sort();
    listed_sorted.sort();
    assert_eq!(listed_sorted, ours.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, stdout, stderr) =
        run(Command::new(&yamllint).args(["--strict", "-f", "parsable"]).args(&listed).current_dir(root()));
    assert!(ok && stdout.is_empty(), "yamllint:\n{stdout}{stderr}");
}

#[test]
fn systemd_units_verify() {
    let units = files(&root().join("deploy/systemd"), &[".service"]);
    assert_eq!(units.len(), 4);
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        panic!("systemd-analyze is missing: apt-get install systemd");
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in &units {
        // verify insists that ExecStart's binary exists: point it at the one we built.
        let text = std::fs::read_to_string(unit).unwrap();
        let mut local = text.clone();
        for bin in ["tally-agent", "tally-collector", "tally"] {
            let at = format!("/usr/local/bin/{bin} ");
            if text.contains(&at) {
                local = local.replace(&at, &format!("{} ", testkit::service::binary(bin).display()));
            }
        }
        assert_ne!(local, text, "{}: ExecStart names no Tally binary in /usr/local/bin", unit.display());
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, local).unwrap();
        let (ok, stdout, stderr) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
        // Unknown keys are only warnings (exit 0): any output fails too.
        assert!(ok && stdout.is_empty() && stderr.is_empty(), "{}:\n{stdout}{stderr}", unit.display());
    }
}

/// One run of a Tally binary found in deploy/: where, which binary, its arguments and the
/// `TALLY_*` variables set for it.
#[derive(Debug)]
struct Invocation {
    at: String,
    binary: String,
    args: Vec<String>,
    env: Vec<String>,
}

/// The Tally binary an image runs, by the image names deploy/docker builds.
fn binary_of_image(image: &str) -> Option<&'static str> {
    let name = image.split(':').next().unwrap();
    ["tally-agent", "tally-collector", "tally"].into_iter().find(|b| *b == name)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().map(scalar).collect()).unwrap_or_default()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Splits a shell line into words (quotes removed; enough for our scripts and ExecStart).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut word, mut quote, mut any) = (String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Tally commands in a shell script: lines starting with a Tally binary.
fn script_invocations(at: &str, script: &str, env: &[String], out: &mut Vec<Invocation>) {
    for line in script.lines() {
        let w = words(line);
        if let Some(bin) = w.first().and_then(|b| binary_of_image(b)) {
            out.push(Invocation { at: at.into(), binary: bin.into(), args: w[1..].to_vec(), env: env.to_vec() });
        }
    }
}

/// Every container of every pod template in a manifest (DaemonSet, Deployment, CronJob, ...).
fn containers<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                if matches!(k.as_str(), Some("containers" | "initContainers")) {
                    out.extend(child.as_sequence().into_iter().flatten());
                } else {
                    containers(child, out);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| containers(c, out)),
        _ => {}
    }
}

/// The keys of every ConfigMap in deploy/kubernetes, by name (what `envFrom` turns into variables).
fn config_map_keys() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for file in files(&root().join("deploy/kubernetes"), &[".yaml"]) {
        for doc in documents(&file).into_iter().filter(|d| d["kind"] == "ConfigMap") {
            let keys = doc["data"].as_mapping().into_iter().flatten().map(|(k, _)| scalar(k)).collect();
            out.insert(scalar(&doc["metadata"]["name"]), keys);
        }
    }
    out
}

fn kubernetes_invocations(out: &mut Vec<Invocation>) {
    let config_maps = config_map_keys();
    for file in files(&root().join("deploy/kubernetes"), &[".yaml"]) {
        for doc in documents(&file) {
            let mut found = Vec::new();
            containers(&doc, &mut found);
            for c in found {
                let image = c["image"].as_str().unwrap();
                let Some(bin) = binary_of_image(image) else { continue };
                let at = format!("{} container {}", file.display(), c["name"].as_str().unwrap());
                let mut env: Vec<String> =
                    c["env"].as_sequence().into_iter().flatten().map(|e| scalar(&e["name"])).collect();
                for from in c["envFrom"].as_sequence().into_iter().flatten() {
                    let name = scalar(&from["configMapRef"]["name"]);
                    let keys = config_maps
                        .get(&name)
                        .unwrap_or_else(|| panic!("{at}: envFrom names no ConfigMap in deploy/kubernetes: {name}"));
                    env.extend(keys.iter().cloned());
                }
                let command = strings(&c["command"]);
                let args = strings(&c["args"]);
                if command.first().is_some_and(|c| c.ends_with("sh")) {
                    script_invocations(&at, args.last().unwrap(), &env, out);
                } else {
                    out.push(Invocation { at, binary: bin.into(), args, env });
                }
            }
        }
    }
}

fn compose() -> Value {
    documents(&root().join("deploy/compose/docker-compose.yaml")).remove(0)
}

fn compose_invocations(out: &mut Vec<Invocation>) {
    for (name, svc) in compose()["services"].as_mapping().unwrap() {
        let Some(bin) = binary_of_image(svc["image"].as_str().unwrap()) else { continue };
        let env = svc["environment"].as_mapping().map(|m| m.keys().map(scalar).collect()).unwrap_or_default();
        let at = format!("docker-compose service {}", scalar(name));
        out.push(Invocation { at, binary: bin.into(), args: strings(&svc["command"]), env });
    }
}

fn systemd_invocations(out: &mut Vec<Invocation>) {
    for unit in files(&root().join("deploy/systemd"), &[".service"]) {
        let text = std::fs::read_to_string(&unit).unwrap().replace("\\\n", " ");
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let w = words(exec);
        let bin = w[0].rsplit('/').next().unwrap();
        let bin = binary_of_image(bin).unwrap_or_else(|| panic!("{}: {bin} is not ours", unit.display()));
        out.push(Invocation { at: unit.display().to_string(), binary: bin.into(), args: w[1..].to_vec(), env: vec![] });
    }
}

fn invocations() -> Vec<Invocation> {
    let mut out = Vec::new();
    kubernetes_invocations(&mut out);
    compose_invocations(&mut out);
    systemd_invocations(&mut out);
    out
}

/// `--help` of a binary's command (for `tally`, its subcommand and, for `report`, the kind).
fn help(binary: &str, commands: &[String], cache: &mut BTreeMap<Vec<String>, String>) -> String {
    let key: Vec<String> = std::iter::once(binary.to_string()).chain(commands.iter().cloned()).collect();
    cache
        .entry(key)
        .or_insert_with(|| {
            let (ok, stdout, stderr) = run(Command::new(testkit::service::binary(binary)).args(commands).arg("--help"));
            assert!(ok, "{binary} {commands:?} --help failed: {stderr}");
            stdout
        })
        .clone()
}

fn has_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("-h, ").unwrap_or(l);
        l.strip_prefix(flag).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '<', ',']))
    })
}

#[test]
fn every_flag_and_variable_in_deploy_is_one_the_binary_has() {
    let all = invocations();
    let mut cache = BTreeMap::new();
    let (mut flags, mut vars) = (0, 0);
    for inv in &all {
        // `tally <command> [usage|sla]`: the words before the first flag.
        let commands: Vec<String> = inv.args.iter().take_while(|a| !a.starts_with('-')).cloned().collect();
        let commands = if inv.binary == "tally" { commands } else { vec![] };
        assert!(inv.binary != "tally" || !commands.is_empty(), "{}: tally without a command", inv.at);
        let help = help(&inv.binary, &commands, &mut cache);
        for arg in inv.args.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            assert!(has_flag(&help, flag), "{}: `{} {}` has no {flag}", inv.at, inv.binary, commands.join(" "));
            flags += 1;
        }
        for var in inv.env.iter().filter(|v| v.starts_with("TALLY_")) {
            assert!(help.contains(&format!("[env: {var}]")), "{}: `{}` reads no {var}", inv.at, inv.binary);
            vars += 1;
        }
    }
    let per_binary = |b: &str| all.iter().filter(|i| i.binary == b).count();
    // DaemonSet, sidecar, compose, systemd | Deployment, StatefulSet, compose, systemd |
    // serve ×3, settle ×3, migrate ×2, and the CronJob's seal, verify, report usage, report sla.
    assert_eq!((per_binary("tally-agent"), per_binary("tally-collector"), per_binary("tally")), (4, 4, 12), "{all:#?}");
    // The CronJob's variable counts once for each of its four commands.
    // TALLY_CLICKHOUSE_CLUSTER (envFrom) counts for the collectors, migrate, serve, settle and the
    // CronJob.
    assert_eq!((flags, vars), (71, 22));
}

#[test]
fn docker_compose_services_are_real() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let names: BTreeSet<String> = services.keys().map(scalar).collect();
    assert_eq!(names, ["agent", "clickhouse", "collector", "migrate", "serve", "settle"].map(String::from).into());
    let volumes: BTreeSet<String> = doc["volumes"].as_mapping().unwrap().keys().map(scalar).collect();
    let mut published = 0;
    for (name, svc) in services {
        let name = scalar(name);
        let image = svc["image"].as_str().unwrap_or_else(|| panic!("service {name} has no image"));
        // Tally images are built here, from a Dockerfile that builds that very binary.
        if let Some(bin) = binary_of_image(image) {
            if let Some(file) = svc["build"]["dockerfile"].as_str() {
                let text = std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{name}: {file}: {e}"));
                assert!(text.contains(&format!("--bin {bin}\n")), "{name}: {file} does not build {bin}");
                assert_eq!(
                    scalar(&svc["build"]["context"]),
                    "../..",
                    "{name}: Dockerfiles build from the repository root"
                );
            } else {
                assert!(
                    services.values().any(|s| s["image"] == svc["image"] && !s["build"].is_null()),
                    "{name}: nothing builds {image}"
                );
            }
        } else {
            assert!(image.starts_with("clickhouse/clickhouse-server:"), "{name}: unexpected image {image}");
        }
        let deps = match &svc["depends_on"] {
            Value::Mapping(m) => m.keys().map(scalar).collect(),
            other => strings(other),
        };
        for dep in deps {
            assert!(names.contains(&dep), "{name} depends on unknown {dep}");
        }
        for v in strings(&svc["volumes"]) {
            let source = v.split(':').next().unwrap();
            assert!(volumes.contains(source), "{name}: volume {source} is not declared");
        }
        // A published port is one the service listens on: a listen flag of its command, else
        // the default of one of its binary's listen flags.
        let Some(bin) = binary_of_image(image) else { continue };
        let cmd = strings(&svc["command"]);
        let subcommand: Vec<String> = cmd.iter().take_while(|a| !a.starts_with('-')).cloned().collect();
        let help = help(bin, &subcommand, &mut BTreeMap::new());
        for port in strings(&svc["ports"]) {
            let inside = port.rsplit(':').next().unwrap();
            let listens_in_cmd =
                cmd.windows(2).any(|w| w[0].ends_with("-listen") && w[1].ends_with(&format!(":{inside}")));
            let default = format!(":{inside}]");
            let listens_by_default = help.lines().any(|l| l.contains("[default: ") && l.trim_end().ends_with(&default));
            assert!(listens_in_cmd || listens_by_default, "{name}: publishes {inside}, which {bin} does not listen on");
            published += 1;
        }
    }
    assert_eq!(published, 5);
}

#[test]
fn dockerfiles_build_our_binaries_on_bookworm() {
    let dockerfiles = files(&root().join("deploy/docker"), &[".Dockerfile"]);
    assert_eq!(dockerfiles.len(), 3);
    for file in &dockerfiles {
        let text = std::fs::read_to_string(file).unwrap();
        let bin = file.file_name().unwrap().to_str().unwrap().trim_end_matches(".Dockerfile");
        let bin = if bin == "tally" { "tally".to_string() } else { format!("tally-{bin}") };
        assert!(text.contains(&format!("--bin {bin}\n")), "{}: does not build {bin}", file.display());
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(stages.len(), 2, "{}: multi-stage: build, then run", file.display());
        assert!(stages[0].contains("bookworm") && stages[1].contains("debian:bookworm"), "{}", file.display());
        assert!(text.contains(&format!("COPY --from=build /src/target/release/{bin} ")), "{}", file.display());
        // The agent embeds the eBPF programs, compiled by clang against libbpf's headers.
        assert_eq!(text.contains("clang libbpf-dev"), bin == "tally-agent", "{}", file.display());
        assert!(testkit::service::binary(&bin).exists());
    }
}

/// `data[key]` of the ConfigMap `name` in a manifest.
fn configmap_file(manifest: &str, name: &str, key: &str) -> String {
    let docs = documents(&root().join("deploy/kubernetes").join(manifest));
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name).unwrap();
    cm["data"][key].as_str().unwrap().to_owned()
}

#[test]
fn files_in_configmaps_are_accepted_by_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    // The plans file: `tally invoice` reads it before it asks ClickHouse (here: nobody), so
    // failing on ClickHouse means the file was accepted.
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, configmap_file("serve.yaml", "tally-plans", "plans.yaml")).unwrap();
    let (ok, _, stderr) = run(Command::new(testkit::service::binary("tally"))
        .args(["invoice", "--tenant", "acme", "--month", "2026-11", "--clickhouse-url", "http://127.0.0.1:9"])
        .arg("--plans")
        .arg(&plans));
    assert!(!ok && !stderr.contains("plans file") && stderr.contains("invoicing tenant acme"), "{stderr}");
    // The keys file: the collector refuses a bad one at start; a good one gets it listening.
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, configmap_file("collector.yaml", "tally-collector-keys", "keys.yaml")).unwrap();
    let mut child = Command::new(testkit::service::binary("tally-collector"))
        .args([
            "--clickhouse-url",
            "http://127.0.0.1:9",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path().join("spool"))
        .arg("--keys")
        .arg(&keys)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Logs go to stderr; a collector that neither listens nor exits is killed after 20 s.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(20));
        let _ = Command::new("kill").arg(&pid).status();
    });
    use std::io::BufRead;
    let out = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let listening = std::io::BufReader::new(out).lines().map_while(Result::ok).any(|l| {
        seen.push(l.clone());
        l.contains("admin listening")
    });
    let _ = child.kill();
    child.wait().unwrap();
    assert!(listening, "the collector refused deploy's keys file:\n{}", seen.join("\n"));
}

/// Shell scripts in manifests (`command: [/bin/sh, -c]`) parse under dash, Debian's /bin/sh, and
/// the monthly CronJob picks the month that just ended.
#[test]
fn shell_scripts_in_manifests_parse() {
    let mut scripts = Vec::new();
    for file in files(&root().join("deploy/kubernetes"), &[".yaml"]) {
        for doc in documents(&file) {
            let mut found = Vec::new();
            containers(&doc, &mut found);
            for c in found.into_iter().filter(|c| strings(&c["command"]).first().is_some_and(|s| s.ends_with("sh"))) {
                scripts
                    .push((format!("{} {}", file.display(), scalar(&c["name"])), strings(&c["args"]).pop().unwrap()));
            }
        }
    }
    assert_eq!(scripts.len(), 2, "the monthly CronJob and ClickHouse Keeper: {scripts:#?}");
    for (at, script) in &scripts {
        let (ok, _, stderr) = run(Command::new("dash").args(["-n", "-c", script]));
        assert!(ok && stderr.is_empty(), "{at}: {stderr}");
    }
    // The CronJob's month, run on a fixed "today": the 1st of March is February's turn.
    let monthly = &scripts.iter().find(|(at, _)| at.contains("reports-cronjob")).unwrap().1;
    let line = monthly.lines().find(|l| l.starts_with("M=")).unwrap();
    let probe = line.replace("$(date -u +%Y-%m-01)", "2028-03-01") + "\necho \"$M\"";
    let (ok, stdout, stderr) = run(Command::new("dash").args(["-c", &probe]));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "2028-02\n");
}
