//! Text that came from elsewhere (a remote, a peer, a file) is stripped of terminal
//! escapes and control characters before it reaches a terminal.

/// `s` without ESC sequences and C0/C1 controls other than newline and tab.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        // CSI: parameters and intermediates, then one final byte in @..~
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        // OSC / DCS / PM / APC: up to BEL or ST (ESC \)
        Some(']' | 'P' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                    chars.next();
                    break;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_csi_osc_and_controls() {
        let s = "ok \u{1b}[31mred\u{1b}[0m \u{1b}]0;title\u{7}x\u{8}\ry\n";
        assert_eq!(super::text(s), "ok red xy\n");
    }
}
