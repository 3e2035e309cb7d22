//! Property-based fuzzing of the stack-file loader: seeds from `fuzz/corpus/stack_file/`
//! (the shipped examples) with bytes overwritten, inserted and cut, and arbitrary text. The
//! loader never panics, and every problem it reports points at a line of the file.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn seeds() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stack_file");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .expect("seeds")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    out.sort();
    out
}

fn input() -> impl Strategy<Value = String> {
    let seeded = (
        proptest::sample::select(seeds()),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                "[ -~\n\"\\[\\]={}]{0,3}",
                0u8..2,
            ),
            0..6,
        ),
    )
        .prop_map(|(mut text, edits)| {
            for (at, piece, how) in edits {
                let mut i = at.index(text.len().max(1)).min(text.len());
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                if how == 0 {
                    let end = (i + piece.len()).min(text.len());
                    let mut end = end;
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(i..end, &piece);
                } else {
                    text.insert_str(i, &piece);
                }
            }
            text
        });
    prop_oneof![4 => seeded, 1 => "\\PC{0,300}"]
}

proptest! {
    #[test]
    fn stack_files(text in input()) {
        let lines = text.lines().count().max(1) + 1;
        match cutover_spec::parse(&text, Path::new("fuzz.toml"), Path::new("/nonexistent")) {
            Ok(spec) => {
                // A file that loads renders to one that loads the same way.
                let again = cutover_spec::parse(&spec.to_toml(), Path::new("again.toml"), Path::new("/nonexistent"));
                prop_assert!(again.is_ok(), "{:?}", again.err());
            }
            Err(e) => {
                for p in e.problems() {
                    prop_assert!(p.line >= 1 && p.line <= lines, "line {} of {}: {p:?}", p.line, lines);
                    prop_assert!(!p.message.is_empty());
                }
            }
        }
    }
}
