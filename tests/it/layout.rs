//! The module graph of `src/` has no cycles: a module may use its descendants (a parent
//! composes its children), and every other `use` edge, re-exports followed to where the
//! item lives, must be acyclic. Built from the source text: `use` trees, `crate::`,
//! `super::` and `self::` paths, and paths that start with a child module's name.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of the crate: its path (`["entra", "send"]`) and its source.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            // `main.rs` is the binary, a crate of its own.
            if rel == Path::new("main") {
                continue;
            }
            out.insert(module, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// The source without comments, string contents and `#[cfg(test)] mod tests { … }`.
fn code_of(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                // A string (raw strings included): its text is not code.
                let raw_hashes = {
                    let mut j = i;
                    let mut n = 0;
                    while j > 0 && bytes[j - 1] == b'#' {
                        j -= 1;
                        n += 1;
                    }
                    (j > 0 && bytes[j - 1] == b'r').then_some(n)
                };
                i += 1;
                match raw_hashes {
                    Some(n) => {
                        let end = format!("\"{}", "#".repeat(n));
                        match source[i..].find(&end) {
                            Some(at) => i += at + end.len(),
                            None => i = bytes.len(),
                        }
                    }
                    None => {
                        while i < bytes.len() && bytes[i] != b'"' {
                            i += if bytes[i] == b'\\' { 2 } else { 1 };
                        }
                        i += 1;
                    }
                }
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                // A char literal ('"' or '\n'), not a lifetime.
                let close = source[i + 1..]
                    .find('\'')
                    .map_or(bytes.len(), |at| i + 2 + at);
                i = close.max(i + 1);
            }
            _ => {
                let ch = source[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    // Unit tests use the crate freely; they are not part of the layout.
    while let Some(at) = find_test_module(&out) {
        let open = at + out[at..].find('{').unwrap();
        let mut depth = 0;
        let mut end = out.len();
        for (j, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, "");
    }
    out
}

fn find_test_module(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let start = from + at;
        let rest = code[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") && rest.split('{').next().is_some_and(|h| !h.contains(';')) {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// The paths a `use` tree names: `a::{b, c::{d, e as f}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &[String], tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base: Vec<String> = prefix.iter().cloned().chain(head).collect();
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        return parts
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(|p| expand(&base, p))
            .collect();
    }
    let path = tree.split(" as ").next().unwrap_or(tree);
    let mut out: Vec<String> = prefix.to_vec();
    out.extend(
        path.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*")
            .map(str::to_owned),
    );
    vec![out]
}

/// The `use` trees of `code`, and whether each is a `pub` one (a re-export).
fn uses(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("use ") {
        let start = from + at;
        from = start + 4;
        let before = code[..start].trim_end();
        let at_item_start = before.is_empty()
            || before.ends_with([';', '{', '}', ']'])
            || before.ends_with("pub")
            || before.ends_with(')');
        let word_start = start == 0 || !code.as_bytes()[start - 1].is_ascii_alphanumeric();
        if !at_item_start || !word_start {
            continue;
        }
        let Some(end) = code[start..].find(';') else {
            break;
        };
        let public = before.ends_with("pub") || before.ends_with(')');
        out.push((public, code[start + 4..start + end].to_owned()));
        from = start + end;
    }
    out
}

/// Inline paths in code: `crate::a::b`, `super::a`, `self::a`.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if start > 0 {
                let prev = code.as_bytes()[start - 1];
                if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                    continue;
                }
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

struct Graph {
    modules: BTreeSet<Module>,
    /// `(module, item)` → the module the item is re-exported from.
    reexports: BTreeMap<(Module, String), Module>,
}

impl Graph {
    /// The module a path used in `from` ends in: the last module segment, a re-exported
    /// item followed to where it comes from. `None` for another crate's path.
    fn resolve(&self, from: &Module, path: &[String]) -> Option<Module> {
        let (mut at, rest): (Module, &[String]) = match path.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &path[1..]),
            Some("self") => (from.clone(), &path[1..]),
            Some("super") => {
                let mut at = from.clone();
                let mut i = 0;
                while path.get(i).map(String::as_str) == Some("super") {
                    at.pop();
                    i += 1;
                }
                (at, &path[i..])
            }
            Some(first) => {
                let mut child = from.clone();
                child.push(first.to_owned());
                if !self.modules.contains(&child) {
                    return None;
                }
                (from.clone(), path)
            }
            None => return None,
        };
        for segment in rest {
            let mut next = at.clone();
            next.push(segment.clone());
            if self.modules.contains(&next) {
                at = next;
                continue;
            }
            if let Some(origin) = self.reexports.get(&(at.clone(), segment.clone())) {
                at = origin.clone();
            }
            break;
        }
        Some(at)
    }
}

fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// The edges between modules of `src`: who uses whom, parent-to-descendant left out.
fn edges_of(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let sources = modules(src);
    let mut graph = Graph {
        modules: sources.keys().cloned().collect(),
        reexports: BTreeMap::new(),
    };
    // Re-exports first, two rounds so that a chain of them resolves.
    for _ in 0..2 {
        for (module, code) in &sources {
            for (public, tree) in uses(code) {
                if !public {
                    continue;
                }
                for path in expand(&[], &tree) {
                    let Some(item) = path.last().cloned() else {
                        continue;
                    };
                    if let Some(origin) = graph.resolve(module, &path) {
                        if &origin != module {
                            graph.reexports.insert((module.clone(), item), origin);
                        }
                    }
                }
            }
        }
    }
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &sources {
        let mut paths: Vec<Vec<String>> = uses(code)
            .into_iter()
            .flat_map(|(_, tree)| expand(&[], &tree))
            .collect();
        paths.extend(inline_paths(code));
        let targets = edges.entry(module.clone()).or_default();
        for path in paths {
            if let Some(target) = graph.resolve(module, &path) {
                let descendant = target.len() > module.len() && target.starts_with(module);
                if &target != module && !descendant && !target.is_empty() {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

#[test]
fn the_module_graph_has_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = edges_of(&src);
    assert!(edges.len() > 40, "the walk found {} modules", edges.len());
    let found: Vec<String> = cycles(&edges)
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_and_a_re_export() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a.rs", "use crate::b::Thing;\n// use crate::c::X;\n");
    write("b/mod.rs", "mod inner;\npub use inner::Thing;\n");
    write(
        "b/inner.rs",
        "pub struct Thing;\nfn f() { let _ = crate::c::make(); let _ = \"crate::a::x\"; }\n",
    );
    write(
        "c.rs",
        "pub fn make() { super::a::go() }\n#[cfg(test)]\nmod tests { use crate::b::Thing; }\n",
    );
    let edges = edges_of(dir.path());
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    let names: Vec<String> = found[0].iter().map(name).collect();
    assert_eq!(names, ["a", "b::inner", "c"]);
    // Without c's call back into a, the graph is acyclic.
    write("c.rs", "pub fn make() {}\n");
    assert!(cycles(&edges_of(dir.path())).is_empty());
}
