//! The three ways to deploy (admin API, `ferry deploy`, a watched directory), what
//! they refuse, rollback by hand, and automatic rollback of a failing version.

mod swap_support;

use std::process::Command;

use ferry_host::deploy::client::{self, Request};
use ferry_host::host::Host;
use ferry_tests::{Broker as _, Embedded, ferry_bin, lag, produce, read_all, wait_until};
use swap_support::*;

/// A broker with `input` and `ledger` (2 partitions each) and one host on it. Bind
/// `_broker` and `_cache` by name: they must live as long as the host.
struct Setup {
    brokers: String,
    host: Host,
    _broker: Embedded,
    _cache: tempfile::TempDir,
}

fn setup(group: &str, component: &Build, admin: bool, extra: &str) -> Setup {
    let broker = Embedded::start();
    broker.create_topic("input", 2);
    broker.create_topic("ledger", 2);
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let host = start(&HostSpec {
        brokers: &brokers,
        group,
        component: &component.path,
        cache_dir: cache.path(),
        admin,
        extra,
    });
    Setup { brokers, host, _broker: broker, _cache: cache }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn the_admin_api_deploys_lists_and_rolls_back_and_refuses_bad_components() {
    let (v1, v2) = (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"));
    let Setup { brokers, host, _broker, _cache } = setup("api", &v1, true, "allow_log = false");
    let url = admin_url(&host);

    // Every call needs the token.
    let wrong = client::call(&url, PIPELINE, "nope", Request::Versions).unwrap();
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let wrong = client::call(&url, PIPELINE, "nope", Request::Deploy(&v2.bytes)).unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(deployed(&host), v1.digest, "a refused call changed nothing");
    let unknown = client::call(&url, "nosuch", TOKEN, Request::Versions).unwrap();
    assert_eq!(unknown.status, 404);

    // Refused components: clear reasons, 422, the running version untouched.
    let refusals = [
        (b"not wasm".to_vec(), "not a WebAssembly file"),
        (build("ferry-guest-wrong-world").bytes, "does not implement the ferry:processor world"),
        (build("ferry-guest-failing-self-test").bytes, "self-test failed: the reference table is missing"),
        // The chaos guest logs; this pipeline does not grant `log`.
        (build("ferry-guest-chaos").bytes, "which this pipeline does not grant"),
    ];
    for (bytes, reason) in &refusals {
        let answer = admin(&host, Request::Deploy(bytes));
        assert_eq!(answer.status, 422, "{}", answer.body);
        assert!(json(&answer)["error"].as_str().unwrap().contains(reason), "want `{reason}` in {}", answer.body);
        assert_eq!(deployed(&host), v1.digest);
    }
    let versions = json(&admin(&host, Request::Versions));
    assert!(versions["previous"].is_null(), "nothing was deployed: {versions}");
    let rejects = versions["history"].as_array().unwrap().iter().filter(|e| e["action"] == "reject").count();
    assert_eq!(rejects, refusals.len(), "every refusal is recorded: {versions}");

    // A good one.
    let answer = admin(&host, Request::Deploy(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = json(&answer);
    assert_eq!(body["digest"], v2.digest.as_str());
    assert_eq!(body["replaced"], v1.digest.as_str());
    assert_eq!(body["switched"], true);
    // A std guest imports WASI too; of ferry's capabilities it needs only `output`.
    let ferry_caps: Vec<&str> = body["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .filter(|c| c.starts_with("ferry:"))
        .collect();
    assert_eq!(ferry_caps, ["ferry:processor/output@0.2.0", "ferry:processor/settings@0.2.0"]);
    assert_eq!(deployed(&host), v2.digest);

    // Records produced now are processed by v2, which tags them in the ledger.
    produce(&brokers, "input", 2, &values("a", 50));
    wait_until("lag 0", || lag(&brokers, "api", "input").iter().all(|p| p.lag() == 0));
    assert_eq!(running(&host), v2.digest);
    assert_eq!(tags(&brokers), ["v2".to_owned()].into(), "every record of the first 50 went through v2");

    let versions = json(&admin(&host, Request::Versions));
    assert_eq!(versions["current"]["digest"], v2.digest.as_str());
    assert_eq!(versions["current"]["origin"], "admin-api");
    assert!(versions["current"]["deployed_at_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(versions["previous"]["digest"], v1.digest.as_str());
    assert_eq!(versions["previous"]["origin"], "startup");

    // The same bytes again: nothing to do.
    let again = json(&admin(&host, Request::Deploy(&v2.bytes)));
    assert_eq!(again["switched"], false, "{again}");

    // Rollback swaps current and previous; with nothing before v1 it is the only way back.
    let back = admin(&host, Request::Rollback);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(json(&back)["to"], v1.digest.as_str());
    assert_eq!(deployed(&host), v1.digest);
    let versions = json(&admin(&host, Request::Versions));
    assert_eq!(versions["current"]["origin"], "rollback");
    assert_eq!(versions["previous"]["digest"], v2.digest.as_str());

    // The pipeline really runs what the slot says once records flow: v1 again.
    produce(&brokers, "input", 2, &values("r", 50));
    wait_until("lag 0", || lag(&brokers, "api", "input").iter().all(|p| p.lag() == 0));
    assert_eq!(running(&host), v1.digest);
    assert_eq!(tags(&brokers), ["v1".to_owned(), "v2".to_owned()].into(), "after the rollback, v1 tags the ledger");
    let ledger = read_all(&brokers, "ledger");
    assert_eq!(ledger.len(), 100, "each record once");
    stop(host);
}

/// The builds that tagged the ledger (`<partition>:<offset>:<tag>:...`).
fn tags(brokers: &str) -> std::collections::BTreeSet<String> {
    read_all(brokers, "ledger").iter().map(|r| r.value.split(':').nth(2).expect("a tag").to_owned()).collect()
}

#[test]
fn ferry_deploy_prints_the_answer_and_fails_on_refusal() {
    let (v1, v2) = (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"));
    let Setup { host, _broker, _cache, .. } = setup("cli", &v1, true, "");
    let url = admin_url(&host);
    let ferry = |token: &str, args: &[&str]| {
        Command::new(ferry_bin())
            .args(["deploy", "--admin", &url, "--pipeline", PIPELINE])
            .args(args)
            .env("FERRY_ADMIN_TOKEN", token)
            .output()
            .expect("ferry runs")
    };

    let ok = ferry(TOKEN, &[v2.path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains(&v2.digest), "the answer is printed: {stdout}");
    assert_eq!(deployed(&host), v2.digest);

    let listed = ferry(TOKEN, &["--versions"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&v1.digest), "previous version listed");

    let denied = ferry("wrong", &["--rollback"]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "a refused call exits non-zero");
    assert!(stderr.contains("401") && stderr.contains("bearer token"), "{stderr}");

    let bad = ferry(TOKEN, &[build("ferry-guest-failing-self-test").path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("422") && stderr.contains("self-test failed"), "{stderr}");
    assert_eq!(deployed(&host), v2.digest, "refused deploy left v2 running");

    let back = ferry(TOKEN, &["--rollback"]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(deployed(&host), v1.digest);

    // The token can come from a file instead, which wins over the environment.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let from_file = ferry("wrong", &["--token-file", token_file.to_str().unwrap(), "--versions"]);
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));

    // Never from an argument (it would show in `ps` and shell history).
    let argument = ferry(TOKEN, &["--token", TOKEN, "--versions"]);
    let stderr = String::from_utf8_lossy(&argument.stderr);
    assert!(!argument.status.success() && stderr.contains("--token"), "{stderr}");
    let none = Command::new(ferry_bin())
        .args(["deploy", "--admin", &url, "--pipeline", PIPELINE, "--versions"])
        .env_remove("FERRY_ADMIN_TOKEN")
        .output()
        .expect("ferry runs");
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success() && stderr.contains("FERRY_ADMIN_TOKEN") && stderr.contains("--token-file"),
        "{stderr}"
    );
    stop(host);
}

#[test]
fn a_file_dropped_into_deploy_dir_is_deployed() {
    let (v1, v2, v3) =
        (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"), build("ferry-guest-versioned-v3"));
    let drop_dir = tempfile::tempdir().unwrap();
    // Already there at startup: not deployed.
    std::fs::write(drop_dir.path().join("old.wasm"), &v3.bytes).unwrap();
    let Setup { host, _broker, _cache, .. } =
        setup("watch", &v1, false, &format!("deploy_dir = \"{}\"", drop_dir.path().display()));
    let slot = host.pipelines[0].slot.clone();

    // Copied under a hidden name, then renamed into place (the safe way to drop one).
    let hidden = drop_dir.path().join(".v2.wasm.tmp");
    std::fs::write(&hidden, &v2.bytes).unwrap();
    std::fs::rename(&hidden, drop_dir.path().join("v2.wasm")).unwrap();
    wait_until("the dropped v2 is deployed", || deployed(&host) == v2.digest);
    let current = slot.versions().current;
    assert!(current.origin.to_string().ends_with("v2.wasm"), "{:?}", current.origin);

    // A broken file is refused and recorded; v2 keeps running.
    std::fs::write(drop_dir.path().join("broken.wasm"), b"\0asm garbage").unwrap();
    wait_until("the broken file is refused", || {
        slot.history().iter().any(|e| e.action == "reject" && e.detail.contains("broken.wasm"))
    });
    assert_eq!(deployed(&host), v2.digest);
    assert!(!slot.history().iter().any(|e| e.digest == v3.digest), "a file present at startup was not deployed");
    stop(host);
}

#[test]
fn a_new_version_that_fails_too_often_is_rolled_back_automatically() {
    let v1 = build("ferry-guest-versioned-v1");
    let chaos = build("ferry-guest-chaos");
    let extra = "auto_rollback = { records = 200, max_failure_rate = 0.2 }\n\
                 failure = { max_attempts = 20, backoff_initial_ms = 20, backoff_max_ms = 100 }";
    let Setup { brokers, host, _broker, _cache } = setup("auto", &v1, true, extra);
    // v1 processes anything; the chaos guest retries records whose value is `retry`.
    produce(&brokers, "input", 2, &vec!["retry".to_owned(); 100]);
    wait_until("v1 catches up", || lag(&brokers, "auto", "input").iter().all(|p| p.lag() == 0));

    let answer = admin(&host, Request::Deploy(&chaos.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let versions = json(&admin(&host, Request::Versions));
    assert_eq!(versions["probation"]["watch_records"], 200, "{versions}");
    produce(&brokers, "input", 2, &vec!["retry".to_owned(); 400]);

    let slot = host.pipelines[0].slot.clone();
    wait_until("the failing version is rolled back", || slot.history().iter().any(|e| e.action == "auto-rollback"));
    assert_eq!(deployed(&host), v1.digest);
    let event = slot.history().into_iter().find(|e| e.action == "auto-rollback").unwrap();
    assert!(event.detail.contains(&chaos.digest) && event.detail.contains("failed"), "{event:?}");
    let versions = json(&admin(&host, Request::Versions));
    assert_eq!(versions["current"]["origin"], "auto-rollback");
    assert!(versions["probation"].is_null());
    // v1 finishes what the chaos version left for retry: nothing is lost or halted.
    wait_until("v1 catches up again", || lag(&brokers, "auto", "input").iter().all(|p| p.lag() == 0));
    assert!(host.pipelines[0].shared.stats.snapshot().partitions.values().all(|p| p.halted.is_none()));
    stop(host);
}
