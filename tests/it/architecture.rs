//! The house rules the source tree keeps: no import circles between source files (a concept
//! used by two modules lives below both), and no source file over 500 lines before its tests.
//!
//! The import graph is read from the text: every `use` tree (braces expanded) and every inline
//! `crate::` / `super::` / `self::` path of a file's non-test code, resolved to the file that
//! defines the item, following `pub use` re-exports (so `use super::Buffer`, re-exported by
//! `head/mod.rs` from `head/buffer.rs`, is an edge to `head/buffer.rs`, not to `head/mod.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every library source file by module path (`src/head/mod.rs` is `["head"]`).
fn source_files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                parts.clear();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code before `#[cfg(test)]`, with comments, strings and char literals blanked.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text
        .find("#[cfg(test)]\nmod tests")
        .or_else(|| text.find("#[cfg(test)]\npub(crate) mod tests"))
    {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let (b, mut out, mut i) = (text.as_bytes(), String::new(), 0);
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // a char literal ('x' or '\n'); lifetimes ('a) have no closing quote
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The paths of a `use` tree, braces expanded (`a::{b, c::d}` -> `a::b`, `a::c::d`).
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Module>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let mut p = prefix.to_vec();
        p.extend(tree.split("::").filter(|s| !s.is_empty()).map(String::from));
        out.push(p);
        return;
    };
    let mut p = prefix.to_vec();
    p.extend(
        tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &p, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand(&inner[start..], &p, out);
    }
}

/// `use` trees of `code` (`pub_only`: only `pub use`), as paths, `as` renames dropped.
fn use_paths(code: &str, pub_only: bool) -> Vec<Module> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let word_start = i == 0 || !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let Some(end) = rest[i..].find(';') else { break };
        let tree = &rest[i + 4..i + end];
        let is_pub = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
        if word_start && (!pub_only || is_pub) && !tree.contains('(') {
            let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
            let tree = tree.replace(" as ", "@");
            let tree: String = tree
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .split(',')
                .map(|s| s.split('@').next().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(",");
            expand(&tree, &[], &mut out);
        }
        rest = &rest[i + end.max(4)..];
    }
    out
}

/// Inline `crate::a::b`, `super::a`, `self::a` paths (outside `use` statements).
fn inline_paths(code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let mut without_uses = String::with_capacity(code.len());
    for statement in code.split_inclusive(';') {
        let t = statement.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if !t.starts_with("use ") {
            without_uses.push_str(statement);
        }
    }
    let code = without_uses.as_str();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let prev = code[..at].chars().last();
            from = at + start.len();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let tail: String = code[at..]
                .chars()
                .take_while(|&c| c.is_alphanumeric() || c == '_' || c == ':')
                .collect();
            out.push(
                tail.split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    out
}

struct Graph {
    files: BTreeMap<Module, PathBuf>,
    defs: BTreeMap<Module, BTreeSet<String>>,
    reexports: BTreeMap<Module, Vec<Module>>,
}

impl Graph {
    fn new(src: &Path) -> Graph {
        let files = source_files(src);
        let mut defs = BTreeMap::new();
        let mut reexports = BTreeMap::new();
        for (m, p) in &files {
            let c = code(p);
            let mut names = BTreeSet::new();
            let words: Vec<&str> = c
                .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '!'))
                .filter(|w| !w.is_empty())
                .collect();
            for w in words.windows(2) {
                if matches!(
                    w[0],
                    "struct"
                        | "enum"
                        | "fn"
                        | "trait"
                        | "type"
                        | "const"
                        | "static"
                        | "union"
                        | "macro_rules!"
                ) {
                    names.insert(w[1].to_string());
                }
            }
            defs.insert(m.clone(), names);
            reexports.insert(m.clone(), use_paths(&c, true));
        }
        Graph {
            files,
            defs,
            reexports,
        }
    }

    /// `path` as seen from module `m`, made absolute.
    fn absolute(&self, m: &Module, path: &[String]) -> Option<Module> {
        let first = path.first()?;
        let mut cur = m.clone();
        let mut rest = path;
        match first.as_str() {
            "crate" => {
                cur.clear();
                rest = &path[1..];
            }
            "super" | "self" => {
                while let Some(s) = rest.first() {
                    match s.as_str() {
                        "super" => {
                            cur.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => {
                // a child module named without `self::` (Rust 2018 relative path)
                let mut child = m.clone();
                child.push(first.clone());
                if !self.files.contains_key(&child) {
                    return None;
                }
            }
        }
        cur.extend(rest.iter().cloned());
        Some(cur)
    }

    /// The file defining what `abs` names, following re-exports.
    fn resolve(&self, abs: &[String], depth: usize) -> Module {
        let (mut module, mut rest) = (Vec::new(), abs);
        for k in (0..=abs.len()).rev() {
            if self.files.contains_key(&abs[..k]) {
                (module, rest) = (abs[..k].to_vec(), &abs[k..]);
                break;
            }
        }
        let Some(item) = rest.first() else { return module };
        if depth > 8 || item == "*" || self.defs[&module].contains(item) {
            return module;
        }
        for re in &self.reexports[&module] {
            let last = re.last().map(String::as_str);
            if last == Some(item.as_str()) || last == Some("*") {
                let mut target_path = re.clone();
                if last == Some("*") {
                    target_path.pop();
                    target_path.push(item.clone());
                }
                let Some(abs) = self.absolute(&module, &target_path) else {
                    continue;
                };
                let target = self.resolve(&abs, depth + 1);
                let found = last != Some("*") || self.defs.get(&target).is_some_and(|d| d.contains(item));
                if target != module && found {
                    return target;
                }
            }
        }
        module
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges = BTreeMap::new();
        for (m, p) in &self.files {
            let c = code(p);
            let mut to = BTreeSet::new();
            for path in use_paths(&c, false).into_iter().chain(inline_paths(&c)) {
                if let Some(abs) = self.absolute(m, &path) {
                    let t = self.resolve(&abs, 0);
                    if &t != m {
                        to.insert(t);
                    }
                }
            }
            edges.insert(m.clone(), to);
        }
        edges
    }
}

/// The cycles of `edges`: strongly connected components of more than one file.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Kosaraju: order by finish time, then components on the reversed graph.
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for start in edges.keys() {
        if seen.contains(start) {
            continue;
        }
        let mut stack = vec![(start.clone(), false)];
        while let Some((v, done)) = stack.pop() {
            if done {
                order.push(v);
                continue;
            }
            if !seen.insert(v.clone()) {
                continue;
            }
            stack.push((v.clone(), true));
            for w in &edges[&v] {
                if !seen.contains(w) {
                    stack.push((w.clone(), false));
                }
            }
        }
    }
    let mut reverse: BTreeMap<Module, Vec<Module>> = BTreeMap::new();
    for (v, ws) in edges {
        for w in ws {
            reverse.entry(w.clone()).or_default().push(v.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.into_iter().rev() {
        if assigned.contains(&v) {
            continue;
        }
        let mut comp = Vec::new();
        let mut stack = vec![v.clone()];
        assigned.insert(v);
        while let Some(x) = stack.pop() {
            comp.push(x.clone());
            for w in reverse.get(&x).into_iter().flatten() {
                if assigned.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        if comp.len() > 1 {
            comp.sort();
            out.push(comp);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_import_circles_between_source_files() {
    let graph = Graph::new(&src());
    let found = cycles(&graph.edges());
    let names: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| graph.files[m].strip_prefix(src()).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(names.is_empty(), "import circles:\n{}", names.join("\n"));
}

#[test]
fn the_circle_check_finds_a_planted_circle() {
    let dir = std::env::temp_dir().join(format!("gp-lite-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("head")).unwrap();
    let write = |rel: &str, text: &str| std::fs::write(dir.join(rel), text).unwrap();
    write("lib.rs", "pub mod head;\npub mod loss;\npub mod span;\n");
    write("span.rs", "pub struct Bounds;\n");
    // head re-exports its child's item: an import of it is an edge to the child, not to mod.rs
    write(
        "head/mod.rs",
        "pub mod buffer;\npub use buffer::Buffer;\nuse crate::loss::mcce;\n",
    );
    write("head/buffer.rs", "use crate::span::Bounds;\npub struct Buffer;\n");
    write("loss.rs", "use crate::span::Bounds;\npub fn mcce() {}\n");
    assert!(cycles(&Graph::new(&dir).edges()).is_empty());
    // loss importing a head item defined in head/mod.rs closes a circle
    write(
        "head/mod.rs",
        "pub mod buffer;\npub use buffer::Buffer;\nuse crate::loss::mcce;\npub struct HeadConfig;\n",
    );
    write(
        "loss.rs",
        "use crate::span::Bounds;\nuse crate::head::{Buffer, HeadConfig};\npub fn mcce() {}\n",
    );
    let found = cycles(&Graph::new(&dir).edges());
    assert_eq!(
        found,
        vec![vec![vec!["head".to_string()], vec!["loss".to_string()]]]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_source_file_over_500_lines_before_its_tests() {
    let mut long = Vec::new();
    for path in source_files(&src()).values() {
        let text = std::fs::read_to_string(path).unwrap();
        let lines = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if lines > 500 {
            long.push(format!("{} ({lines})", path.display()));
        }
    }
    assert!(long.is_empty(), "one concept a file: {}", long.join(", "));
}
