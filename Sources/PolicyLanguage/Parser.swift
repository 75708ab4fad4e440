/// Reads the text of a file named in an `include` (or the top file). Injected, so the parser does no I/O.
public protocol SourceReader {
    /// The text, or nil when it cannot be read; `path` is already resolved against the includer.
    func read(_ path: String) -> String?
    /// `path` as seen from the file `from` (relative paths are relative to that file's folder).
    func resolve(_ path: String, from: String) -> String
}

/// Parses a file and everything it includes into one list of directives.
public struct Parser {
    public private(set) var diagnostics: [Diagnostic] = []
    let reader: any SourceReader
    var includeStack: [String] = []
    static let maxIncludeDepth = 16

    public init(reader: any SourceReader) { self.reader = reader }

    /// Parses `path` (read through the reader). A file that cannot be read is one diagnostic at 1:1.
    public mutating func parseFile(_ path: String) -> [Directive] {
        guard let text = reader.read(path) else {
            diagnostics.append(Diagnostic(SourceLocation(file: path, line: 1, column: 1), "cannot read file"))
            return []
        }
        return parse(text: text, file: path)
    }

    public mutating func parse(text: String, file: String) -> [Directive] {
        includeStack.append(file)
        defer { includeStack.removeLast() }
        let tokens = Lexer.tokens(text, file: file, diagnostics: &diagnostics)
        var index = 0
        let result = statements(tokens, &index, closing: nil)
        return result
    }

    /// Statements until `}` (when inside a block) or the end of input.
    mutating func statements(_ t: [LexedToken], _ i: inout Int, closing opener: SourceLocation?) -> [Directive] {
        var out: [Directive] = []
        while i < t.count {
            let tok = t[i]
            switch tok.token {
            case .end:
                i += 1
            case .closeBrace:
                if opener != nil { i += 1; return out }
                diagnostics.append(Diagnostic(tok.location, "unexpected '}' with no open block"))
                i += 1
            case .openBrace:
                diagnostics.append(Diagnostic(tok.location, "a block must follow a directive name"))
                i += 1
                _ = statements(t, &i, closing: tok.location)
            case .quoted:
                diagnostics.append(Diagnostic(tok.location, "a directive name cannot be a quoted string"))
                skipStatement(t, &i)
            case .word(let name):
                i += 1
                var args: [Argument] = []
                var block: [Directive]? = nil
                argumentLoop: while i < t.count {
                    switch t[i].token {
                    case .word(let w): args.append(Argument(text: w, quoted: false, location: t[i].location)); i += 1
                    case .quoted(let q): args.append(Argument(text: q, quoted: true, location: t[i].location)); i += 1
                    case .openBrace:
                        let openLoc = t[i].location
                        i += 1
                        block = statements(t, &i, closing: openLoc)
                        break argumentLoop
                    case .end, .closeBrace:
                        break argumentLoop
                    }
                }
                let d = Directive(name: name, location: tok.location, arguments: args, block: block)
                if name == "include" && block == nil {
                    out += include(d)
                } else {
                    out.append(d)
                }
            }
        }
        if let opener {
            diagnostics.append(Diagnostic(opener, "block opened here is never closed: a '}' is missing"))
        }
        return out
    }

    mutating func skipStatement(_ t: [LexedToken], _ i: inout Int) {
        while i < t.count, t[i].token != .end, t[i].token != .closeBrace { i += 1 }
    }

    mutating func include(_ d: Directive) -> [Directive] {
        guard d.arguments.count == 1 else {
            diagnostics.append(Diagnostic(d.location, "include takes one file name"))
            return []
        }
        let arg = d.arguments[0]
        let path = reader.resolve(arg.text, from: d.location.file)
        if includeStack.contains(path) {
            diagnostics.append(Diagnostic(arg.location, "include cycle: \(path) includes itself"))
            return []
        }
        if includeStack.count >= Self.maxIncludeDepth {
            diagnostics.append(Diagnostic(arg.location, "includes nested more than \(Self.maxIncludeDepth) deep"))
            return []
        }
        guard let text = reader.read(path) else {
            diagnostics.append(Diagnostic(arg.location, "cannot read included file \(path)"))
            return []
        }
        return parse(text: text, file: path)
    }
}
