//! The layering of lib.rs, checked: every `crate::` path in a module's code (tests aside) names
//! a module on a lower floor, or its own.

use std::{collections::BTreeSet, fs, path::Path};

/// Top-level modules by floor, bottom first.
const FLOORS: &[&[&str]] = &[
    &["kernel", "event", "clock", "human"],
    &["decode"],
    &["track", "load"],
    &["stream", "sockdiag", "config", "workload"],
    &["alerts", "doctor", "listen_queues"],
    &["snapshot", "inventory"],
    &["export", "pipeline", "wire"],
    &["run", "watch", "top"],
    &["cli"],
];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// The code of a file without its test module (everything from the first `#[cfg(test)]` at
/// the start of a line on).
fn without_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The top-level modules named by `crate::` paths in `code`, grouped imports included.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the first segment of each top-level item.
            let (mut depth, mut item) = (0_usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_import_runs_back_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut wrong = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs"))
            .expect("a file name");
        if matches!(top, "lib" | "main" | "floors") {
            continue;
        }
        let own = floor(top).unwrap_or_else(|| panic!("{top} is on no floor: add it to FLOORS"));
        let text = fs::read_to_string(path).expect("reading a source file");
        for module in crate_modules(without_tests(&text)) {
            if module == top {
                continue;
            }
            match floor(&module) {
                Some(f) if f < own => {}
                Some(f) => wrong.push(format!(
                    "{} (floor {own}) uses {module} (floor {f})",
                    relative.display()
                )),
                None => wrong.push(format!(
                    "{} uses {module}, which is on no floor",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run back down:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn grouped_paths_are_read() {
    let code =
        "use crate::{\n    event::{A, B},\n    track::Tracker,\n};\nlet x = crate::clock::now();";
    let found: Vec<String> = crate_modules(code).into_iter().collect();
    assert_eq!(found, ["clock", "event", "track"]);
}
