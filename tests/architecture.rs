//! The dependency rule of `src/lib.rs`, checked on the sources: imports point inward, the core
//! names no shell crate, and no two top-level modules import each other (directly or not).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every file below `src/`.
fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// `crate::<module>` references per top-level module, outside `#[cfg(test)]` sections.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in sources() {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let set = deps.entry(top.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for piece in line.split("crate::").skip(1) {
                let module: String = piece
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !module.is_empty() && module != top {
                    set.insert(module);
                }
            }
        }
    }
    deps
}

#[test]
fn imports_point_inward() {
    let deps = imports();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("core", &[][..]),
        ("log", &["core"][..]),
        ("view", &["core"][..]),
        ("metrics", &["core"][..]),
        ("shutdown", &[][..]),
        ("owner", &["core", "log", "view", "metrics", "shutdown"][..]),
        ("http", &["core", "log", "view", "metrics", "shutdown"][..]),
        (
            "app",
            &[
                "core", "log", "view", "metrics", "shutdown", "owner", "http",
            ][..],
        ),
        (
            "tools",
            &["core", "log", "view", "metrics", "shutdown", "owner", "app"][..],
        ),
    ]);
    for (module, used) in &deps {
        if module == "cli" {
            continue;
        }
        let ok = allowed
            .get(module.as_str())
            .unwrap_or_else(|| panic!("module {module} is not in the dependency rule"));
        for u in used {
            assert!(
                ok.contains(&u.as_str()),
                "{module} imports {u}, against the dependency rule of src/lib.rs"
            );
        }
    }
    for (module, used) in &deps {
        assert!(
            module == "cli" || !used.contains("cli"),
            "{module} imports cli"
        );
    }
}

#[test]
fn the_core_names_no_shell_crate() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    for entry in std::fs::read_dir(core).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for shell in [
            "tokio",
            "rdkafka",
            "redb",
            "axum",
            "prometheus",
            "clap",
            "dashmap",
            "tracing",
            "std::time",
            "std::thread",
            "std::fs",
            "std::net",
            "std::env",
            "std::process",
        ] {
            assert!(
                !code.contains(&format!("{shell}::")) && !code.contains(&format!("use {shell}")),
                "{} names {shell}",
                path.display()
            );
        }
    }
}

/// The CLI turns flags into values and prints results: it reaches the logs only through the
/// port (`log::Deployment`, `log::Logs` and the values re-exported beside them), never a
/// backend's own module, so one place (`cli::options::deployment`) decides the backend.
#[test]
fn the_cli_reaches_the_logs_through_the_port() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    for path in sources().into_iter().filter(|p| p.starts_with(&cli)) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for backend in ["log::embedded", "log::kafka"] {
                assert!(
                    !line.contains(backend),
                    "{}:{}: the CLI names {backend}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn no_source_file_over_800_lines() {
    for path in sources() {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 800, "{} has {lines} lines", path.display());
    }
}
