//! `deploy/container/Containerfile` against this repository: no engine runs here, so
//! the test reads it the way an engine would (stages, `COPY` sources relative to the
//! context, `WORKDIR`) and checks that it builds with `cargo xtask build` and ships
//! the binary that command produces.

use crate::cmd;

/// `(keyword, rest)`: an instruction.
type Instruction = (String, String);
/// `(name, instructions)`: a stage, named by its `AS`.
type Stage = (Option<String>, Vec<Instruction>);

/// One instruction: its keyword (upper case) and the rest of the line, with line
/// continuations joined and comments dropped.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let full = std::mem::take(&mut pending);
                if let Some((keyword, rest)) = full.split_once(char::is_whitespace) {
                    out.push((keyword.to_uppercase(), rest.trim().to_owned()));
                }
            }
        }
    }
    out
}

/// The stages: each `FROM ... [AS name]` and the instructions under it.
fn stages(text: &str) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for (keyword, rest) in instructions(text) {
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            out.push((name, Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push((keyword, rest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containerfile() -> String {
        let path = cmd::workspace_root().join("deploy/container/Containerfile");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn value<'a>(body: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
        body.iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn builds_with_cargo_xtask_build_and_ships_what_it_builds() {
        let stages = stages(&containerfile());
        let [(Some(build), build_body), (None, runtime)] = stages.as_slice() else {
            panic!("want two stages, a named build stage and the runtime: {stages:?}");
        };
        assert_eq!(value(build_body, "RUN"), ["cargo xtask build"]);
        let workdir = value(build_body, "WORKDIR");
        let [workdir] = workdir.as_slice() else {
            panic!("the build stage sets one WORKDIR: {workdir:?}");
        };

        let shipped = format!("{workdir}/{}", cmd::RELEASE_BINARY);
        let copies = value(runtime, "COPY");
        let [copy] = copies.as_slice() else {
            panic!("the runtime stage copies one file: {copies:?}");
        };
        let words: Vec<&str> = copy.split_whitespace().collect();
        assert_eq!(
            words[..2],
            [format!("--from={build}").as_str(), shipped.as_str()],
            "the image must copy what `cargo xtask build` builds"
        );
        let entrypoint = value(runtime, "ENTRYPOINT");
        assert_eq!(entrypoint, [format!("[\"{}\"]", words[2])]);
    }

    #[test]
    fn every_file_the_build_stage_copies_exists() {
        let root = cmd::workspace_root();
        let stages = stages(&containerfile());
        let mut copied = Vec::new();
        for copy in value(&stages[0].1, "COPY") {
            let words: Vec<&str> = copy.split_whitespace().collect();
            let (sources, _dest) = words.split_at(words.len() - 1);
            for source in sources {
                assert!(
                    root.join(source).exists(),
                    "COPY {source}: not in the repository"
                );
                copied.push(source.trim_end_matches('/').to_owned());
            }
        }
        // What the build reads: every workspace member (cargo loads them all), the
        // lock file, the `cargo xtask` alias, the playbooks compiled in.
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let members = manifest
            .lines()
            .find_map(|l| l.strip_prefix("members = ["))
            .expect("workspace members");
        let mut needed: Vec<String> = members
            .trim_end_matches(']')
            .split(',')
            .map(|m| m.trim().trim_matches('"').to_owned())
            .collect();
        needed.extend(["Cargo.lock", ".cargo", "playbooks"].map(str::to_owned));
        for path in needed {
            assert!(
                copied.contains(&path),
                "the build stage does not copy {path}"
            );
        }
    }

    #[test]
    fn instructions_join_continuations_and_skip_comments() {
        let text = "# c\nFROM a AS b\nRUN x \\\n  y\n\nFROM c\nCOPY --from=b /p /q\n";
        let s = stages(text);
        assert_eq!(s[0].0.as_deref(), Some("b"));
        assert_eq!(s[0].1, [("RUN".to_owned(), "x y".to_owned())]);
        assert_eq!(s[1].0, None);
        assert_eq!(s[1].1[0].1, "--from=b /p /q");
    }
}
