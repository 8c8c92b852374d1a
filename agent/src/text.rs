//! Strings a container chose (cgroup directory names under a delegated subtree, the
//! runtime's names, labels and images, an OOM victim's command) made safe for the
//! text outputs: the snapshot table, `top`, playbook reports and log lines. A name
//! must not drive the terminal (escape sequences that clear the screen, set the
//! window title or hide text), break a line in two, or reorder what follows it
//! (Unicode bidi overrides). JSON, OTLP and Prometheus keep names exact, each in its
//! own format's escaping.
//!
//! Every character printed as an escape is listed in [`is_escaped`]; everything
//! else, backslashes included (systemd unit names carry a literal `\x2d`), is left
//! as it is. A string without such characters is printed without an allocation.

use std::{borrow::Cow, fmt};

/// Unicode's format characters (category Cf: invisible, or they change how the
/// text around them is ordered or joined), as of Unicode 16, and the line and
/// paragraph separators (Zl, Zp), by inclusive range.
const FORMAT: &[(char, char)] = &[
    ('\u{00ad}', '\u{00ad}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{06dd}', '\u{06dd}'),
    ('\u{070f}', '\u{070f}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08e2}', '\u{08e2}'),
    ('\u{180e}', '\u{180e}'),
    // Zero-width space, joiners, left-to-right and right-to-left marks.
    ('\u{200b}', '\u{200f}'),
    // Line and paragraph separators; bidi embeddings and overrides (U+202A-E).
    ('\u{2028}', '\u{202e}'),
    // Word joiner, invisible operators.
    ('\u{2060}', '\u{2064}'),
    // Bidi isolates (U+2066-9), deprecated format characters.
    ('\u{2066}', '\u{206f}'),
    // Byte order mark, zero-width no-break space.
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    // Tag characters: invisible text.
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// Whether `c` is printed as an escape: the C0 controls (ESC, BEL, newline, tab...),
/// DEL and the C1 controls (U+0080-9F: CSI and OSC on terminals that take 8-bit
/// controls), and the characters of [`FORMAT`].
pub fn is_escaped(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c <= '\u{9f}'
        || (c >= '\u{ad}'
            && FORMAT
                .binary_search_by(|&(lo, hi)| {
                    if hi < c {
                        std::cmp::Ordering::Less
                    } else if lo > c {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .is_ok())
}

/// `s` for a text output: each character of [`is_escaped`] as `\xNN` (ASCII
/// controls and DEL) or `\u{NNNN}` (the others), the rest as it is. Honours width
/// and alignment (`{:<36}`) on the escaped form.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_some() || f.precision().is_some() {
            return f.pad(&escape(self.0));
        }
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| is_escaped(c)) {
            f.write_str(&rest[..at])?;
            if c.is_ascii() {
                write!(f, "\\x{:02x}", c as u32)?;
            } else {
                write!(f, "\\u{{{:04x}}}", c as u32)?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `s` as [`Escaped`] prints it; borrowed when nothing needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_escaped) {
        Cow::Owned(Escaped(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// A message of several lines (an error with a verifier log) for a log or error
/// line: each line escaped, the lines after the first indented by two spaces, so
/// that no part of it reads as a record of its own.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\n  ");
        }
        out.push_str(&escape(line));
    }
    Cow::Owned(out)
}

/// `s` as a Markdown code span: escaped, fenced by one backtick more than the
/// longest run of backticks in it (padded with a space where it starts or ends with
/// a backtick or a space, which CommonMark strips), so that nothing in it is read as
/// Markdown or HTML. `|` becomes `\|`: GitHub's tables split cells on it even inside
/// code spans, and show `\|` there as `|`; use the result only in table cells.
pub fn markdown_cell(s: &str) -> String {
    let s = escape(s);
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if s.is_empty() || s.starts_with(['`', ' ']) || s.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", s.replace('|', "\\|"))
}

/// `s` as a Markdown code span outside tables (see [`markdown_cell`]).
pub fn markdown_code(s: &str) -> String {
    markdown_cell(s).replace("\\|", "|")
}

/// `s` as one word of a shell command line that gives back `s` exactly: as it is if
/// it has only characters no shell treats specially, in single quotes otherwise,
/// and in `$'…'` with the UTF-8 bytes of the characters [`is_escaped`] names as
/// `\xNN` (bash, zsh, ksh, POSIX.1-2024 sh) if it has any, so the word is safe to
/// print too.
pub fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    if !s.chars().any(is_escaped) {
        return Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            // Byte by byte: `\u` would depend on the shell's locale.
            c if is_escaped(c) => {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_borrowed_and_unchanged() {
        for s in [
            "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-ab.scope",
            r"/system.slice/system-getty.slice/getty@tty1\x2dx.service",
            "日本語/ünïcödé/emoji-😀",
            "tab\\tnot-a-tab",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s:?}");
            assert_eq!(escape(s), s);
            assert_eq!(Escaped(s).to_string(), s);
        }
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape("\x1b]0;pwned\x07"), r"\x1b]0;pwned\x07");
        assert_eq!(escape("\x1b[2J"), r"\x1b[2J");
        assert_eq!(escape("a\nb\rc\td\0e\x7f"), r"a\x0ab\x0dc\x09d\x00e\x7f");
        // C1: CSI (U+009B) and OSC (U+009D) are escape sequences on 8-bit terminals.
        assert_eq!(
            escape("\u{9b}2J\u{9d}0;x\u{9c}"),
            r"\u{009b}2J\u{009d}0;x\u{009c}"
        );
        assert_eq!(
            escape("\u{80}\u{85}\u{9f}\u{a0}"),
            "\\u{0080}\\u{0085}\\u{009f}\u{a0}"
        );
    }

    #[test]
    fn bidi_and_invisible_characters_become_visible_escapes() {
        assert_eq!(escape("evil\u{202e}gnp.exe"), r"evil\u{202e}gnp.exe");
        for c in ('\u{200b}'..='\u{200f}')
            .chain('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{feff}', '\u{2028}', '\u{2029}', '\u{ad}', '\u{e0041}'])
        {
            let shown = escape(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:04x}}}", c as u32));
            assert!(shown.chars().all(|c| c.is_ascii_graphic()), "{shown}");
        }
        // Neighbours of the ranges stay as they are.
        for c in [
            '\u{200a}', '\u{2010}', '\u{2027}', '\u{202f}', '\u{2065}', '\u{2070}',
        ] {
            assert!(!is_escaped(c), "{c:?}");
        }
    }

    #[test]
    fn the_ranges_are_sorted_and_disjoint() {
        assert!(FORMAT.iter().all(|(lo, hi)| lo <= hi));
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0));
    }

    #[test]
    fn width_applies_to_the_escaped_form() {
        assert_eq!(format!("[{:<8}]", Escaped("a\x1bb")), r"[a\x1bb  ]");
        assert_eq!(format!("[{:>4}]", Escaped("ab")), "[  ab]");
    }

    #[test]
    fn lines_stay_lines_of_one_record() {
        assert_eq!(escape_lines("plain"), "plain");
        assert_eq!(
            escape_lines("not attached\nverifier log:\n0: r1 = \x1b[2J"),
            "not attached\n  verifier log:\n  0: r1 = \\x1b[2J"
        );
    }

    #[test]
    fn markdown_spans_hold_anything() {
        assert_eq!(markdown_code("/a/b"), "`/a/b`");
        assert_eq!(markdown_code("a`b"), "``a`b``");
        assert_eq!(markdown_code("`a``"), "``` `a`` ```");
        assert_eq!(markdown_code(" a "), "`  a  `");
        assert_eq!(markdown_code("<b>*x*</b>"), "`<b>*x*</b>`");
        assert_eq!(markdown_code("a\x1b[2J|b"), r"`a\x1b[2J|b`");
        assert_eq!(markdown_cell("a|b"), r"`a\|b`");
    }

    #[test]
    fn shell_words_round_trip() {
        assert_eq!(shell_word("/kubepods/pod-1/abc"), "/kubepods/pod-1/abc");
        assert_eq!(shell_word("/a b;rm -rf ~"), "'/a b;rm -rf ~'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("/x\x1b[2J'\\"), r"$'/x\x1b[2J\'\\'");
        assert_eq!(shell_word("a\u{202e}b"), r"$'a\xe2\x80\xaeb'");
        assert!(!shell_word("/x\x1b\u{202e}").chars().any(is_escaped));
    }

    /// The words give the string back through a real shell.
    #[test]
    fn shell_words_survive_bash() {
        if !std::path::Path::new("/bin/bash").exists() {
            eprintln!("skipped: no /bin/bash");
            return;
        }
        let words = [
            "/plain/path",
            "/a b;$(touch /tmp/x)`id`",
            "it's \\x2d",
            "/x\x1b]0;pwned\x07\x1b[2J\t\r",
            "evil\u{202e}gnp\u{e0041}\u{9b}",
        ];
        for s in words {
            let out = std::process::Command::new("/bin/bash")
                .env("LC_ALL", "C")
                .args(["-c", &format!("printf %s {}", shell_word(s))])
                .output()
                .expect("bash");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{}", shell_word(s));
        }
    }
}
