//! DRBD configuration syntax: tokens and the statement tree, with `include`
//! resolved.
//!
//! The grammar is DRBD's, reduced to its shape:
//!
//! ```text
//! file      := statement*
//! statement := WORD value* ( ';' | '{' statement* '}' )
//! value     := WORD | STRING
//! ```
//!
//! A WORD is a run of characters other than white space, `;`, `{`, `}` and
//! `"`; a `#` at the start of a token starts a comment that runs to the end of
//! the line. A STRING is `"…"` on one line, with `\"` and `\\` escapes (other
//! `\x` stand for `x`), as drbdadm's scanner has it.
//!
//! Invariants: every token and statement carries the file it came from and
//! its 1-based line and column (in characters), so every later error can
//! point at it; `include "glob";` statements never survive into the tree —
//! they are replaced by the statements of the files they name, resolved
//! relative to the including file's directory (as drbdadm does), at most
//! [`MAX_INCLUDE_DEPTH`] deep, each file read at most once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, Result};

/// Largest configuration file read. A DRBD resource file is a few KiB; a
/// multi-megabyte one is a mistake (a disk image named `*.res`?), not a
/// configuration to parse.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How deep `include` may nest. drbd.conf includes global_common.conf and
/// drbd.d/*.res: two levels. Eight leaves room and stops runaway recursion.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// How deep `{ }` blocks may nest. DRBD's deepest is resource → on → volume
/// (3); the limit keeps hostile input from exhausting the stack.
pub const MAX_BLOCK_DEPTH: usize = 16;

/// A position in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// An error at this position.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::parse(&self.file, self.line, self.col, message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokKind {
    Word(String),
    Str(String),
    Open,
    Close,
    Semi,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokKind,
    line: u32,
    col: u32,
    /// Length in characters, to point just after a token ("missing `;`").
    len: u32,
}

/// One value of a statement: a word or a quoted string.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub text: String,
    pub pos: Pos,
    /// Length in characters of the token as written.
    pub len: u32,
}

impl Value {
    /// The position just after this value (where a `;` is missing).
    pub fn end(&self) -> Pos {
        Pos {
            col: self.pos.col.saturating_add(self.len),
            ..self.pos.clone()
        }
    }
}

/// A statement: `key values… ;` or `key values… { body }`.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub key: String,
    pub pos: Pos,
    /// Length in characters of the key.
    pub key_len: u32,
    pub values: Vec<Value>,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    /// The position just after the key.
    pub fn key_end(&self) -> Pos {
        Pos {
            col: self.pos.col.saturating_add(self.key_len),
            ..self.pos.clone()
        }
    }
}

fn tokenize(text: &str, file: &Arc<PathBuf>) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    while let Some(&c) = chars.peek() {
        let (start_line, start_col) = (line, col);
        let simple = match c {
            '{' => Some(TokKind::Open),
            '}' => Some(TokKind::Close),
            ';' => Some(TokKind::Semi),
            _ => None,
        };
        if let Some(kind) = simple {
            chars.next();
            col += 1;
            tokens.push(Token {
                kind,
                line,
                col: start_col,
                len: 1,
            });
        } else if c == '\n' {
            chars.next();
            line += 1;
            col = 1;
        } else if c.is_whitespace() {
            chars.next();
            col += 1;
        } else if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
        } else if c == '"' {
            chars.next();
            col += 1;
            let mut s = String::new();
            loop {
                match chars.next() {
                    None | Some('\n') => {
                        return Err(ConfigError::parse(
                            file,
                            start_line,
                            start_col,
                            "unterminated string: the closing `\"` is missing on this line",
                        ))
                    }
                    Some('"') => {
                        col += 1;
                        break;
                    }
                    Some('\\') => {
                        col += 1;
                        match chars.next() {
                            None | Some('\n') => {
                                return Err(ConfigError::parse(
                                    file,
                                    start_line,
                                    start_col,
                                    "unterminated string: the closing `\"` is missing on this line",
                                ))
                            }
                            Some(e) => {
                                col += 1;
                                s.push(e);
                            }
                        }
                    }
                    Some(other) => {
                        col += 1;
                        s.push(other);
                    }
                }
            }
            tokens.push(Token {
                kind: TokKind::Str(s),
                line,
                col: start_col,
                len: col - start_col,
            });
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"') {
                    break;
                }
                w.push(c);
                chars.next();
                col += 1;
            }
            tokens.push(Token {
                kind: TokKind::Word(w),
                line,
                col: start_col,
                len: col - start_col,
            });
        }
    }
    Ok(tokens)
}

fn describe(kind: &TokKind) -> String {
    match kind {
        TokKind::Word(w) => format!("`{w}`"),
        TokKind::Str(s) => format!("string \"{s}\""),
        TokKind::Open => "`{`".to_owned(),
        TokKind::Close => "`}`".to_owned(),
        TokKind::Semi => "`;`".to_owned(),
    }
}

/// Builds statements from tokens; `depth` counts enclosing blocks.
struct TreeParser<'a> {
    tokens: &'a [Token],
    next: usize,
    file: Arc<PathBuf>,
}

impl TreeParser<'_> {
    fn pos(&self, t: &Token) -> Pos {
        Pos {
            file: Arc::clone(&self.file),
            line: t.line,
            col: t.col,
        }
    }

    /// Parses statements until a `}` (consumed, when `opener` is given) or the
    /// end of input (an error when inside a block).
    fn statements(&mut self, opener: Option<(&Token, &str)>, depth: usize) -> Result<Vec<Stmt>> {
        let mut out = Vec::new();
        loop {
            let Some(tok) = self.tokens.get(self.next) else {
                return match opener {
                    None => Ok(out),
                    Some((open, what)) => Err(self.pos(open).error(format!(
                        "unclosed `{{` of `{what}`: the matching `}}` is missing"
                    ))),
                };
            };
            self.next += 1;
            match &tok.kind {
                TokKind::Close if opener.is_some() => return Ok(out),
                TokKind::Close => {
                    return Err(self.pos(tok).error("unexpected `}`: no block is open here"))
                }
                TokKind::Word(key) => out.push(self.statement(tok, key, depth)?),
                other => {
                    return Err(self
                        .pos(tok)
                        .error(format!("expected a keyword, found {}", describe(other))))
                }
            }
        }
    }

    fn statement(&mut self, key_tok: &Token, key: &str, depth: usize) -> Result<Stmt> {
        let mut values: Vec<Value> = Vec::new();
        loop {
            let Some(tok) = self.tokens.get(self.next) else {
                let after = values
                    .last()
                    .map_or_else(|| key.to_owned(), |v| v.text.clone());
                let (line, col) = values
                    .last()
                    .map_or((key_tok.line, key_tok.col + key_tok.len), |v| {
                        (v.pos.line, v.pos.col + v.len)
                    });
                return Err(ConfigError::parse(
                    &self.file,
                    line,
                    col,
                    format!("missing `;` after `{after}` at end of file"),
                ));
            };
            self.next += 1;
            match &tok.kind {
                TokKind::Word(w) | TokKind::Str(w) => values.push(Value {
                    text: w.clone(),
                    pos: self.pos(tok),
                    len: tok.len,
                }),
                TokKind::Semi => return Ok(self.stmt(key_tok, key, values, None)),
                TokKind::Open => {
                    if depth >= MAX_BLOCK_DEPTH {
                        return Err(self.pos(tok).error(format!(
                            "blocks nested deeper than {MAX_BLOCK_DEPTH} levels"
                        )));
                    }
                    let mut what = key.to_owned();
                    for v in &values {
                        what.push(' ');
                        what.push_str(&v.text);
                    }
                    let body = self.statements(Some((tok, &what)), depth + 1)?;
                    return Ok(self.stmt(key_tok, key, values, Some(body)));
                }
                TokKind::Close => {
                    let after = values
                        .last()
                        .map_or_else(|| key.to_owned(), |v| v.text.clone());
                    return Err(self
                        .pos(tok)
                        .error(format!("missing `;` after `{after}` before `}}`")));
                }
            }
        }
    }

    fn stmt(
        &self,
        key_tok: &Token,
        key: &str,
        values: Vec<Value>,
        block: Option<Vec<Stmt>>,
    ) -> Stmt {
        Stmt {
            key: key.to_owned(),
            pos: self.pos(key_tok),
            key_len: key_tok.len,
            values,
            block,
        }
    }
}

/// Parses one file's text into statements, without resolving includes.
pub(crate) fn parse_text(text: &str, file: &Path) -> Result<Vec<Stmt>> {
    let file = Arc::new(file.to_path_buf());
    let tokens = tokenize(text, &file)?;
    let mut parser = TreeParser {
        tokens: &tokens,
        next: 0,
        file,
    };
    parser.statements(None, 0)
}

/// Reads a file, refusing ones larger than [`MAX_FILE_BYTES`].
pub(crate) fn read_limited(path: &Path) -> Result<String> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
                    meta.len()
                ),
            ),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Loads files and resolves `include`, remembering which files were read.
#[derive(Debug, Default)]
pub(crate) struct Loader {
    seen: BTreeSet<PathBuf>,
}

impl Loader {
    /// Reads `path` and everything it includes; a file already read is
    /// skipped (drbd.conf and a directory listing may both name it).
    pub fn load(&mut self, path: &Path, depth: usize) -> Result<Vec<Stmt>> {
        let canonical = std::fs::canonicalize(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !self.seen.insert(canonical) {
            return Ok(Vec::new());
        }
        let text = read_limited(path)?;
        let stmts = parse_text(&text, path)?;
        self.resolve(stmts, path, depth)
    }

    pub(crate) fn resolve(
        &mut self,
        stmts: Vec<Stmt>,
        file: &Path,
        depth: usize,
    ) -> Result<Vec<Stmt>> {
        let mut out = Vec::with_capacity(stmts.len());
        for mut stmt in stmts {
            if stmt.key == "include" && stmt.block.is_none() {
                out.append(&mut self.include(&stmt, file, depth)?);
                continue;
            }
            if let Some(body) = stmt.block.take() {
                stmt.block = Some(self.resolve(body, file, depth)?);
            }
            out.push(stmt);
        }
        Ok(out)
    }

    fn include(&mut self, stmt: &Stmt, file: &Path, depth: usize) -> Result<Vec<Stmt>> {
        let [pattern] = stmt.values.as_slice() else {
            return Err(stmt
                .pos
                .error("`include` takes one file name or pattern: include \"drbd.d/*.res\";"));
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(pattern.pos.error(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} levels (an include loop?)"
            )));
        }
        let base = file.parent().unwrap_or_else(|| Path::new("."));
        let full = base.join(&pattern.text);
        let is_glob = pattern.text.contains(['*', '?', '[']);
        let paths: Vec<PathBuf> = if is_glob {
            let full_str = full.to_string_lossy();
            let matches = glob::glob(&full_str).map_err(|e| {
                pattern
                    .pos
                    .error(format!("bad include pattern `{}`: {e}", pattern.text))
            })?;
            let mut v: Vec<PathBuf> = matches.filter_map(std::result::Result::ok).collect();
            v.sort();
            v
        } else {
            if !full.is_file() {
                return Err(pattern.pos.error(format!(
                    "cannot open include file '{}': no such file",
                    full.display()
                )));
            }
            vec![full]
        };
        let mut out = Vec::new();
        for p in paths {
            out.append(&mut self.load(&p, depth + 1)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Stmt>> {
        parse_text(s, Path::new("t.res"))
    }

    #[test]
    fn nested_blocks_and_values() {
        let t =
            parse("resource r { net { shared-secret \"a \\\"b\\\"\"; } # c\n on x { disk /d; } }")
                .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key, "resource");
        assert_eq!(t[0].values[0].text, "r");
        let body = t[0].block.as_ref().unwrap();
        assert_eq!(body[0].block.as_ref().unwrap()[0].values[0].text, "a \"b\"");
        assert_eq!((body[1].pos.line, body[1].pos.col), (2, 2));
    }

    #[test]
    fn stray_close_brace() {
        let e = parse("global { }\n}").unwrap_err().to_string();
        assert_eq!(e, "t.res:2:1: unexpected `}`: no block is open here");
    }

    #[test]
    fn value_end_position() {
        let t = parse("a bcd;").unwrap();
        let end = t[0].values[0].end();
        assert_eq!((end.line, end.col), (1, 6));
    }
}
