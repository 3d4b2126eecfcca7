//! `mcp-relay check-config` on the built binary: the shipped example configuration is valid,
//! documents every setting and shows the defaults; layers apply in order (file < environment <
//! flags); secrets are masked; mistakes exit with status 2 and name their key.

mod support;

use std::{collections::BTreeMap, process::Output};

use support::peers::repo_root;

fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-relay"));
    cmd.arg("check-config").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCP_RELAY_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("run mcp-relay check-config")
}

fn effective(output: &Output) -> toml::Table {
    assert!(
        output.status.success(),
        "check-config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout.clone()).expect("UTF-8");
    text.parse()
        .unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"))
}

/// Every leaf key as a dotted path, with its value.
fn leaves(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(t) => leaves(t, &format!("{path}."), out),
            v => {
                out.insert(path, v.clone());
            }
        }
    }
}

#[test]
fn the_example_configuration_is_valid_documents_every_setting_and_shows_the_defaults() {
    let example = repo_root().join("deploy/systemd/mcp-relay.toml");
    let from_example = effective(&check_config(&[example.to_str().expect("path")], &[]));
    let example_text = std::fs::read_to_string(&example).expect("read the example");
    let example_table: toml::Table = example_text.parse().expect("the example is TOML");

    let mut shipped = BTreeMap::new();
    leaves(&example_table, "", &mut shipped);
    let mut in_effect = BTreeMap::new();
    leaves(&from_example, "", &mut in_effect);
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        in_effect.keys().collect::<Vec<_>>(),
        "the example must list every setting the daemon has"
    );

    // Apart from the upstream it names, the example's values are the embedded defaults.
    let defaults = effective(&check_config(
        &[
            "--upstream",
            shipped["proxy.upstream"].as_str().expect("URL"),
        ],
        &[],
    ));
    assert_eq!(from_example, defaults);
}

#[test]
fn flags_override_the_environment_which_overrides_the_file_and_secrets_are_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\nadmin_listen = \"127.0.0.1:7002\"\n\
         shutdown_grace_secs = 3\n[proxy]\nupstream = \"http://svc:hunter2@127.0.0.1:9/mcp\"\n\
         [session.tracker]\nreplay_events = 9\n",
    )
    .expect("write config");
    let file = file.to_str().expect("path");
    let output = check_config(
        &["--config", file, "--shutdown-grace-secs", "5"],
        &[
            ("MCP_RELAY_LISTEN", "127.0.0.1:7003"),
            ("MCP_RELAY_SHUTDOWN_GRACE_SECS", "4"),
            ("MCP_RELAY_SESSION__TRACKER__DEDUP_IDS", "77"),
            ("MCP_RELAY_LOG__FORMAT", "json"),
            ("MCP_RELAY_PROXY__FORWARDED", "off"),
            ("MCP_RELAY_PROXY__TRUSTED_PROXIES", "[10.0.0.0/8, ::1]"),
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let c = effective(&output);
    assert_eq!(
        c["listen"].as_str(),
        Some("127.0.0.1:7003"),
        "env over file"
    );
    assert_eq!(
        c["admin_listen"].as_str(),
        Some("127.0.0.1:7002"),
        "file over default"
    );
    assert_eq!(
        c["shutdown_grace_secs"].as_integer(),
        Some(5),
        "flag over env"
    );
    assert_eq!(
        c["session"]["tracker"]["replay_events"].as_integer(),
        Some(9)
    );
    assert_eq!(c["session"]["tracker"]["dedup_ids"].as_integer(), Some(77));
    assert_eq!(c["log"]["format"].as_str(), Some("json"));
    assert_eq!(c["proxy"]["forwarded"].as_str(), Some("off"));
    assert_eq!(
        c["proxy"]["trusted_proxies"].as_array().map(Vec::len),
        Some(2)
    );
    let flagged = effective(&check_config(
        &[
            "--upstream",
            "http://h/mcp",
            "--forwarded",
            "replace",
            "--trusted-proxy",
            "fd00::/8",
        ],
        &[("MCP_RELAY_PROXY__TRUSTED_PROXIES", "[10.0.0.0/8]")],
    ));
    assert_eq!(flagged["proxy"]["forwarded"].as_str(), Some("replace"));
    assert_eq!(
        flagged["proxy"]["trusted_proxies"].as_array().unwrap()[0].as_str(),
        Some("fd00::/8"),
        "the flag replaces the list"
    );
    assert!(!text.contains("hunter2"), "a password was printed:\n{text}");
    assert_eq!(
        c["proxy"]["upstream"].as_str(),
        Some("http://svc:********@127.0.0.1:9/mcp")
    );

    // MCP_RELAY_CONFIG names the file when no argument does.
    let via_env = effective(&check_config(&[], &[("MCP_RELAY_CONFIG", file)]));
    assert_eq!(via_env["shutdown_grace_secs"].as_integer(), Some(3));
}

#[test]
fn mistakes_exit_with_status_2_and_name_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[proxy]\nupstream = \"http://h/mcp\"\nmax_body = 1\n",
    )
    .expect("write");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 8] = [
        (vec![typo.to_str().expect("path")], vec![], "max_body"),
        (
            vec!["/nonexistent/relay.toml"],
            vec![],
            "/nonexistent/relay.toml",
        ),
        (vec![], vec![], "proxy.upstream"),
        (
            vec!["--upstream", "http://h/mcp"],
            vec![("MCP_RELAY_SESSION__IDLE_TTL_SECS", "soon")],
            "idle_ttl_secs",
        ),
        (
            vec![
                "--upstream",
                "http://h/mcp",
                "--metrics-listen",
                "127.0.0.1:8080",
            ],
            vec![],
            "metrics.listen",
        ),
        (
            vec!["--upstream", "http://h/mcp", "--threads", "100000"],
            vec![],
            "proxy.threads",
        ),
        (
            vec![
                "--upstream",
                "http://h/mcp",
                "--trusted-proxy",
                "10.0.0.1/8",
            ],
            vec![],
            "proxy.trusted_proxies",
        ),
        (
            vec!["--upstream", "http://h/mcp"],
            vec![("MCP_RELAY_PROXY__FORWARDED", "on")],
            "proxy.forwarded",
        ),
    ];
    for (args, env, key) in cases {
        let output = check_config(&args, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.to_lowercase().contains(key),
            "{args:?} {env:?}: {stderr}"
        );
    }
}
