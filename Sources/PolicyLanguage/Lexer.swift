enum Token: Hashable {
    case word(String)
    case quoted(String)
    case openBrace
    case closeBrace
    case end   // newline or ";"
}

struct LexedToken {
    let token: Token
    let location: SourceLocation
}

/// Splits text into tokens. Works on bytes, so a stray control byte is a diagnostic, not a crash.
struct Lexer {
    static func tokens(_ text: String, file: String, diagnostics: inout [Diagnostic]) -> [LexedToken] {
        let bytes = Array(text.utf8)
        var out: [LexedToken] = []
        var i = 0, line = 1, lineStart = 0
        func loc(_ at: Int) -> SourceLocation {
            SourceLocation(file: file, line: line, column: String(decoding: bytes[lineStart..<at], as: UTF8.self).count + 1)
        }
        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), 13:
                i += 1
            case 10:
                out.append(LexedToken(token: .end, location: loc(i)))
                i += 1; line += 1; lineStart = i
            case UInt8(ascii: ";"):
                out.append(LexedToken(token: .end, location: loc(i))); i += 1
            case UInt8(ascii: "#"):
                while i < bytes.count && bytes[i] != 10 { i += 1 }
            case UInt8(ascii: "{"):
                out.append(LexedToken(token: .openBrace, location: loc(i))); i += 1
            case UInt8(ascii: "}"):
                out.append(LexedToken(token: .closeBrace, location: loc(i))); i += 1
            case UInt8(ascii: "\""):
                let start = loc(i)
                var value: [UInt8] = []
                i += 1
                var closed = false
                while i < bytes.count && bytes[i] != 10 {
                    if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count, bytes[i + 1] != 10 {
                        value.append(bytes[i + 1]); i += 2; continue
                    }
                    if bytes[i] == UInt8(ascii: "\"") { closed = true; i += 1; break }
                    value.append(bytes[i]); i += 1
                }
                if !closed { diagnostics.append(Diagnostic(start, "unterminated string: a closing \" is missing on this line")) }
                out.append(LexedToken(token: .quoted(String(decoding: value, as: UTF8.self)), location: start))
            default:
                if b < 0x20 || b == 0x7f {
                    diagnostics.append(Diagnostic(loc(i), "invalid control character 0x\(String(b, radix: 16))"))
                    i += 1
                    continue
                }
                let start = i
                while i < bytes.count {
                    let c = bytes[i]
                    if c <= 0x20 || c == 0x7f || c == UInt8(ascii: "{") || c == UInt8(ascii: "}") || c == UInt8(ascii: ";")
                        || c == UInt8(ascii: "\"") || c == UInt8(ascii: "#") { break }
                    i += 1
                }
                out.append(LexedToken(token: .word(String(decoding: bytes[start..<i], as: UTF8.self)), location: loc(start)))
            }
        }
        out.append(LexedToken(token: .end, location: loc(i)))
        return out
    }
}
