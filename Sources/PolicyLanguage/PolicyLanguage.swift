/// PolicyLanguage: the syntax of Relaygate's one configuration language, with no meaning attached.
///
/// Text becomes a tree of `Directive`s (a name, arguments, an optional `{ ... }` block), each with its
/// `SourceLocation`; `include "file"` is expanded through an injected `SourceReader`, so this module
/// reads no file itself. Every problem becomes a `Diagnostic`; parsing never stops at the first one.
/// Meaning (which directives exist, what their arguments are) lives in the Config module.
///
/// Grammar (one statement a line; `;` may also end one):
///
///     file       = *statement
///     statement  = word *argument ( block / end )
///     block      = "{" *statement "}"
///     argument   = word / quoted-string
///     end        = newline / ";" / "}" (the block's end)
///     comment    = "#" to the end of the line, where a token could start
public enum PolicyLanguage {}

/// `file:line:col`, 1-based.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let column: Int
    public init(file: String, line: Int, column: Int) { self.file = file; self.line = line; self.column = column }
    public var description: String { "\(file):\(line):\(column)" }
    public static func < (a: SourceLocation, b: SourceLocation) -> Bool {
        (a.file, a.line, a.column) < (b.file, b.line, b.column)
    }
}

public struct Diagnostic: Hashable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }
    public let location: SourceLocation
    public let severity: Severity
    public let message: String

    public init(_ location: SourceLocation, _ message: String, severity: Severity = .error) {
        self.location = location; self.message = message; self.severity = severity
    }
    /// `file:line:col: message`, or `file:line:col: warning: message`.
    public var description: String {
        severity == .error ? "\(location): \(message)" : "\(location): warning: \(message)"
    }
}

public struct Argument: Hashable, Sendable {
    public let text: String
    public let quoted: Bool
    public let location: SourceLocation
    public init(text: String, quoted: Bool, location: SourceLocation) {
        self.text = text; self.quoted = quoted; self.location = location
    }
}

public struct Directive: Hashable, Sendable {
    public let name: String
    public let location: SourceLocation
    public let arguments: [Argument]
    /// nil when the statement has no `{ }` block; empty when it has an empty one.
    public let block: [Directive]?
}
