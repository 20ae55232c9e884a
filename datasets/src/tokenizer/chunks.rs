//! Meta's input chunking before BPE: 400,000-character windows, then no run of more than 25,000
//! whitespace or non-whitespace characters.
//!
//! Follows `llama_models/llama3/tokenizer.py`: `Tokenizer.encode` (`TIKTOKEN_MAX_ENCODE_CHARS`)
//! and `_split_whitespaces_or_nonwhitespaces` (`MAX_NO_WHITESPACES_CHARS`). Each piece is encoded
//! on its own, so a cut changes the tokens at that point; herd must cut where Meta cuts. Python
//! counts characters as Unicode scalar values (Rust `char`s) and tests whitespace with
//! `str.isspace()`, reproduced by [`is_python_space`].

/// Meta's `TIKTOKEN_MAX_ENCODE_CHARS`: the text is cut into windows of this many characters.
pub const MAX_ENCODE_CHARS: usize = 400_000;

/// Meta's `MAX_NO_WHITESPACES_CHARS`: the longest run of whitespace or non-whitespace characters
/// a piece may hold.
pub const MAX_RUN_CHARS: usize = 25_000;

/// Python's `str.isspace()` for one character.
///
/// The set was listed with Python 3.11 (`[c for c in range(0x110000) if chr(c).isspace()]`): the
/// characters with bidirectional class WS, B or S, or general category Zs. It is Rust's
/// `char::is_whitespace` (the `White_Space` property) plus the four information separators
/// U+001C..=U+001F, which Python counts as whitespace and Unicode does not.
#[must_use]
pub const fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'..='\u{000D}'
            | '\u{001C}'..='\u{0020}'
            | '\u{0085}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Calls `encode_piece` on each piece Meta's `encode` would hand to tiktoken, in order.
///
/// An empty text has no pieces (Meta's window loop does not run). A text of at most
/// [`MAX_RUN_CHARS`] bytes is one piece, found without scanning it.
pub fn for_each_piece<E>(
    text: &str,
    encode_piece: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    for_each_piece_with_limits(text, MAX_ENCODE_CHARS, MAX_RUN_CHARS, encode_piece)
}

/// [`for_each_piece`] with the two limits as parameters, so tests can use small ones.
fn for_each_piece_with_limits<E>(
    text: &str,
    window_chars: usize,
    max_run_chars: usize,
    mut encode_piece: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    if text.is_empty() {
        return Ok(());
    }
    // Fewer bytes than the run limit means fewer characters too: no cut is possible. This is the
    // common case (one chat message) and allocates nothing.
    if text.len() <= max_run_chars.min(window_chars) {
        return encode_piece(text);
    }
    let mut piece_start = 0; // byte offset of the piece being grown
    let mut chars_in_window = 0;
    let mut run_chars = 0;
    let mut run_is_space = false;
    for (offset, c) in text.char_indices() {
        let is_space = is_python_space(c);
        if chars_in_window == window_chars {
            // `for i in range(0, len(s), TIKTOKEN_MAX_ENCODE_CHARS)`: a new window starts here.
            encode_piece(&text[piece_start..offset])?;
            piece_start = offset;
            chars_in_window = 0;
        }
        if chars_in_window == 0 {
            // `current_slice_is_space = s[0].isspace()`, `current_slice_len = 0`.
            run_is_space = is_space;
            run_chars = 0;
        }
        chars_in_window += 1;
        if run_is_space == is_space {
            run_chars += 1;
            if run_chars > max_run_chars {
                encode_piece(&text[piece_start..offset])?;
                piece_start = offset;
                run_chars = 1;
            }
        } else {
            run_is_space = is_space;
            run_chars = 1;
        }
    }
    encode_piece(&text[piece_start..])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Python's `str.isspace()` set, listed with Python 3.11.
    const PYTHON_SPACES: [u32; 29] = [
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];

    #[test]
    fn python_space_table_matches_cpython() {
        let listed: Vec<u32> = (0..=0x10_FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| is_python_space(*c))
            .map(u32::from)
            .collect();
        assert_eq!(listed, PYTHON_SPACES);
        // And the relation to Rust's notion, as documented.
        for c in (0..=0x10_FFFF_u32).filter_map(char::from_u32) {
            let separator = ('\u{1C}'..='\u{1F}').contains(&c);
            assert_eq!(is_python_space(c), c.is_whitespace() || separator, "{c:?}");
        }
    }

    /// A line-by-line port of Meta's Python, on a `Vec<char>`, as the reference.
    fn meta_pieces(text: &str, window_chars: usize, max_run_chars: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for window in chars.chunks(window_chars) {
            let mut current_len = 0;
            let mut current_is_space = window.first().is_some_and(|c| is_python_space(*c));
            let mut start = 0;
            for (i, c) in window.iter().enumerate() {
                let now_space = is_python_space(*c);
                if current_is_space ^ now_space {
                    current_len = 1;
                    current_is_space = now_space;
                } else {
                    current_len += 1;
                    if current_len > max_run_chars {
                        pieces.push(window[start..i].iter().collect());
                        start = i;
                        current_len = 1;
                    }
                }
            }
            pieces.push(window[start..].iter().collect());
        }
        pieces
    }

    fn pieces(text: &str, window_chars: usize, max_run_chars: usize) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(()) = for_each_piece_with_limits(text, window_chars, max_run_chars, |piece| {
            out.push(piece.to_owned());
            Ok::<(), Infallible>(())
        });
        out
    }

    /// Piece lengths with Meta's limits, in characters.
    fn piece_lengths(text: &str) -> Vec<usize> {
        let mut lengths = Vec::new();
        let Ok(()) = for_each_piece(text, |piece| {
            lengths.push(piece.chars().count());
            Ok::<(), Infallible>(())
        });
        lengths
    }

    #[test]
    fn a_30000_space_run_is_cut_after_25000() {
        let text = " ".repeat(30_000);
        assert_eq!(piece_lengths(&text), [25_000, 5_000]);
    }

    #[test]
    fn mixed_runs_are_cut_only_when_one_run_is_too_long() {
        // 20,000 letters, 20,000 spaces, 30,000 letters: only the last run exceeds 25,000, and the
        // cut lands 25,000 characters into it, so the first piece holds mixed text.
        let text = format!(
            "{}{}{}",
            "a".repeat(20_000),
            " ".repeat(20_000),
            "b".repeat(30_000)
        );
        assert_eq!(piece_lengths(&text), [65_000, 5_000]);
    }

    #[test]
    fn windows_of_400000_chars_count_characters_not_bytes() {
        // 'é' is two bytes; alternate it with spaces so no run is long.
        let text = "é ".repeat(250_000); // 500,000 characters
        assert_eq!(piece_lengths(&text), [400_000, 100_000]);
    }

    #[test]
    fn empty_text_has_no_pieces() {
        assert!(pieces("", 4, 2).is_empty());
    }

    #[test]
    fn matches_meta_port_on_small_limits() {
        let alphabet = ['a', ' ', '\u{1C}', 'é', '\n', '\u{3000}', '7'];
        // A deterministic pseudo-random walk over texts (xorshift), biased towards long runs.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 40) as usize;
            let mut text = String::new();
            let mut seed = state;
            for _ in 0..length {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let pick = (seed >> 33) as usize;
                // Repeat the previous character two times out of three.
                let c = text
                    .chars()
                    .last()
                    .filter(|_| !pick.is_multiple_of(3))
                    .unwrap_or(alphabet[pick % alphabet.len()]);
                text.push(c);
            }
            for (window, run) in [(7, 3), (5, 5), (10, 2), (3, 4), (1, 1)] {
                assert_eq!(
                    pieces(&text, window, run),
                    meta_pieces(&text, window, run),
                    "{text:?} window {window} run {run}"
                );
            }
        }
    }
}
