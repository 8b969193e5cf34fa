//! The README's library snippet is the compiled (and tested) example's code: the Rust block
//! under "As a library" must equal the part of `engine/examples/embed.rs` between its
//! `README-BEGIN` and `README-END` markers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

fn dedent(lines: &[&str]) -> String {
    let indent =
        lines.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
    let indent = indent.unwrap_or(0);
    let text: Vec<&str> = lines.iter().map(|l| l.get(indent..).unwrap_or("").trim_end()).collect();
    text.join("\n").trim().to_owned()
}

#[test]
fn the_readme_library_snippet_is_the_compiled_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/embed.rs")).unwrap();
    let block: Vec<&str> = readme
        .split("```rust\n")
        .nth(1)
        .expect("a ```rust block in the README")
        .split("\n```")
        .next()
        .unwrap()
        .lines()
        .collect();
    let region: Vec<&str> = example
        .split("// README-BEGIN\n")
        .nth(1)
        .expect("README-BEGIN in the example")
        .split("// README-END")
        .next()
        .unwrap()
        .lines()
        .collect();
    assert_eq!(dedent(&block), dedent(&region), "README.md and examples/embed.rs differ");
}
