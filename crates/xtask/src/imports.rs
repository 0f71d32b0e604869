//! `cargo xtask lint`'s import check: no module of a crate imports one that
//! imports it back, directly or round a longer loop.
//!
//! Two graphs per crate, from the source text (tests left out):
//! - the crate's top-level modules (`src/x.rs` or `src/x/`), with an edge
//!   `a → b` when a file under `a` names `crate::b`;
//! - in each folder, its files, with an edge `x → y` when `x.rs` names its
//!   sibling as `super::y`. (A folder's `mod.rs` and its files refer to each
//!   other by nature: that is not counted.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, with its path relative to `dir`.
fn rust_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        if entry.path().is_dir() {
            rust_files(dir, &rel, out);
        } else if rel.extension().is_some_and(|e| e == "rs") {
            out.push(rel);
        }
    }
}

/// The text a file compiles outside its tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The first path segment after each `prefix` (`crate::`, `super::`),
/// including each member of a `prefix{a::b, c}` list.
fn named_after(text: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            names.extend(list[..end].split(',').map(ident));
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Each loop of `graph`, as the modules it passes (one per loop found).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            found.push(cycle);
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// The import loops of the crate whose sources are in `src`, each as
/// `a -> b -> a`.
pub fn loops(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, Path::new(""), &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.components().next())
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut top = Graph::new();
    let mut folders: BTreeMap<PathBuf, Graph> = BTreeMap::new();
    for rel in &files {
        let Ok(text) = std::fs::read_to_string(src.join(rel)) else {
            continue;
        };
        let text = without_tests(&text);
        let first = rel.components().next().map_or(String::new(), |c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        });
        for name in named_after(text, "crate::") {
            if name != first && modules.contains(&name) {
                top.entry(first.clone()).or_default().insert(name);
            }
        }
        let (Some(folder), Some(stem)) = (rel.parent(), rel.file_stem()) else {
            continue;
        };
        let stem = stem.to_string_lossy().to_string();
        if folder.as_os_str().is_empty() || stem == "mod" {
            continue;
        }
        let siblings: BTreeSet<String> = files
            .iter()
            .filter(|f| f.parent() == Some(folder))
            .filter_map(|f| f.file_stem())
            .map(|s| s.to_string_lossy().to_string())
            .filter(|s| s != "mod")
            .collect();
        for name in named_after(text, "super::") {
            if name != stem && siblings.contains(&name) {
                folders
                    .entry(folder.to_path_buf())
                    .or_default()
                    .entry(stem.clone())
                    .or_default()
                    .insert(name);
            }
        }
    }
    let mut out: Vec<String> = cycles(&top).into_iter().map(|c| c.join(" -> ")).collect();
    for (folder, graph) in &folders {
        out.extend(cycles(graph).into_iter().map(|c| {
            let names: Vec<String> = c
                .iter()
                .map(|m| format!("{}/{m}", folder.display()))
                .collect();
            names.join(" -> ")
        }));
    }
    out
}

/// The import loops of every crate of the workspace, each named with its
/// crate.
pub fn workspace_loops() -> Vec<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        "clip-runtime",
        "datafusion-clip",
        "ballista-clip",
        "clipql",
        "xtask",
    ]
    .into_iter()
    .flat_map(|name| {
        loops(&crates.join(name).join("src"))
            .into_iter()
            .map(move |l| format!("{name}: {l}"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-imports-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn loops_are_found_between_modules_and_between_siblings() {
        let dir = tree(&[
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b::X;"),
            ("b/mod.rs", "mod x; mod y; use crate::{c, d};"),
            ("b/x.rs", "use super::y::Y; use super::Parent;"),
            ("b/y.rs", "use super::{x::X, Other};"),
            (
                "c.rs",
                "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::b; }",
            ),
        ]);
        let found = loops(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            found,
            ["a -> b -> c -> a", "b/x -> b/y -> b/x"],
            "{found:?}"
        );
    }

    #[test]
    fn no_crate_of_the_workspace_has_an_import_loop() {
        let found = workspace_loops();
        assert!(found.is_empty(), "{found:?}");
    }
}
