import MailModel

/// Parses one command line (CRLF already removed) into a `Command`. Pure and total: every input yields
/// a command or a `CommandError`.
public enum CommandParser {
    public static func parse(_ line: ArraySlice<UInt8>) -> Result<Command, CommandError> {
        // Control characters never belong in a command (NUL, bare CR, DEL, ...); TAB is tolerated as
        // white space only by being refused here too, as RFC 5321 uses SP alone.
        if line.contains(where: { $0 < 0x20 || $0 == 0x7f }) { return .failure(.badCharacters) }
        if line.contains(where: { $0 >= 0x80 }), !Self.isValidUTF8(line) { return .failure(.badCharacters) }

        let spaceIndex = line.firstIndex(of: UInt8(ascii: " ")) ?? line.endIndex
        let verbBytes = line[line.startIndex..<spaceIndex]
        guard verbBytes.count <= 16, let verbText = String(validating: verbBytes, as: UTF8.self),
              let verb = Verb.byName[verbText.uppercased()] else {
            return .failure(.unknownCommand)
        }
        var argument = line[spaceIndex...]
        if argument.first == UInt8(ascii: " ") { argument = argument.dropFirst() }
        let hasArgument = !argument.allSatisfy { $0 == UInt8(ascii: " ") }

        switch verb {
        case .ehlo, .helo:
            let name = trimmed(argument)
            guard !name.isEmpty else { return .failure(.syntax(usage: "\(verb.rawValue) hostname")) }
            guard isValidHeloName(name) else { return .failure(.badHeloName) }
            let text = String(decoding: name, as: UTF8.self)
            return .success(verb == .ehlo ? .ehlo(text) : .helo(text))
        case .mail:
            return parseMail(argument)
        case .rcpt:
            return parseRcpt(argument)
        case .data:
            return hasArgument ? .failure(.noArgumentsAllowed) : .success(.data)
        case .rset:
            return hasArgument ? .failure(.noArgumentsAllowed) : .success(.rset)
        case .quit:
            return hasArgument ? .failure(.noArgumentsAllowed) : .success(.quit)
        case .noop:
            return .success(.noop)  // RFC 5321 4.1.1.9: a string argument is allowed and ignored
        case .help:
            return .success(.help)
        case .starttls:
            return hasArgument ? .failure(.noArgumentsAllowed) : .success(.starttls)
        case .vrfy:
            guard hasArgument else { return .failure(.syntax(usage: "VRFY address")) }
            return .success(.vrfy(String(decoding: trimmed(argument), as: UTF8.self)))
        case .auth:
            let words = trimmed(argument).split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            guard (1...2).contains(words.count), words[0].count <= 20,
                  words[0].allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }) else {
                return .failure(.syntax(usage: "AUTH mechanism [initial-response]"))
            }
            return .success(.auth(mechanism: String(decoding: words[0], as: UTF8.self).uppercased(),
                                  initialResponse: words.count == 2 ? Array(words[1]) : nil))
        case .expn, .turn, .etrn, .bdat, .send, .soml, .saml, .atrn:
            return .failure(.notImplemented)
        }
    }

    // MARK: MAIL / RCPT

    static func parseMail(_ arg: ArraySlice<UInt8>) -> Result<Command, CommandError> {
        let path: AddressParser.ParsedPath, params: [Parameter]
        switch pathAndParameters(arg, keyword: "FROM:", usage: "MAIL FROM:<address>", badPath: .badSender,
                                 allowNull: true, allowPostmaster: false) {
        case .failure(let e): return .failure(e)
        case .success(let r): (path, params) = r
        }
        var mp = MailParameters()
        for p in params {
            switch p.keyword {
            case "SIZE":
                guard let v = p.value, !v.isEmpty, v.count <= 20, v.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                    return .failure(.badParameter)
                }
                mp.size = Int(String(decoding: v, as: UTF8.self)) ?? Int.max
            case "BODY":
                switch p.value.map({ String(decoding: $0, as: UTF8.self).uppercased() }) {
                case "7BIT": mp.body = .sevenBit
                case "8BITMIME": mp.body = .eightBitMIME
                case "BINARYMIME": return .failure(.unsupportedParameter)  // needs CHUNKING, not offered
                default: return .failure(.badParameter)
                }
            case "SMTPUTF8":
                guard p.value == nil else { return .failure(.badParameter) }
                mp.smtpUTF8 = true
            case "RET":
                switch p.value.map({ String(decoding: $0, as: UTF8.self).uppercased() }) {
                case "FULL": mp.ret = .full
                case "HDRS": mp.ret = .headers
                default: return .failure(.badParameter)
                }
            case "ENVID":
                // RFC 3461 4.4: xtext, at most 100 characters.
                guard let v = p.value, !v.isEmpty, v.count <= 100, let decoded = XText.decode(v) else {
                    return .failure(.badParameter)
                }
                mp.envelopeID = decoded
            case "AUTH":
                // RFC 4954 5: xtext of a mailbox, or <>.
                guard let v = p.value, !v.isEmpty, v.count <= 500, let decoded = XText.decode(v) else {
                    return .failure(.badParameter)
                }
                mp.auth = decoded
            default:
                return .failure(.unsupportedParameter)
            }
        }
        let addressIsASCII = path.mailbox?.isASCII ?? true
        if !addressIsASCII && !mp.smtpUTF8 { return .failure(.utf8Required) }
        return .success(.mail(path.reverse, mp))
    }

    static func parseRcpt(_ arg: ArraySlice<UInt8>) -> Result<Command, CommandError> {
        let path: AddressParser.ParsedPath, params: [Parameter]
        switch pathAndParameters(arg, keyword: "TO:", usage: "RCPT TO:<address>", badPath: .badRecipient,
                                 allowNull: false, allowPostmaster: true) {
        case .failure(let e): return .failure(e)
        case .success(let r): (path, params) = r
        }
        var rp = RecipientParameters()
        for p in params {
            switch p.keyword {
            case "NOTIFY":
                guard let v = p.value, let n = parseNotify(v) else { return .failure(.badParameter) }
                rp.notify = n
            case "ORCPT":
                // RFC 3461 4.2: addr-type ";" xtext, at most 500 characters.
                guard let v = p.value, v.count <= 500, let semi = v.firstIndex(of: UInt8(ascii: ";")) else {
                    return .failure(.badParameter)
                }
                let type = String(decoding: v[v.startIndex..<semi], as: UTF8.self)
                let rest = v[v.index(after: semi)...]
                guard !type.isEmpty, type.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }),
                      !rest.isEmpty, let decoded = XText.decode(rest) else { return .failure(.badParameter) }
                rp.originalRecipient = OriginalRecipient(addressType: type, address: decoded)
            default:
                return .failure(.unsupportedParameter)
            }
        }
        return .success(.rcpt(path.forward, rp))
    }

    /// `KEYWORD <path> params` shared by MAIL and RCPT: the path, then parameters with no keyword twice
    /// (RFC 5321 4.1.2 esmtp-param; RFC 1870 and 3461 each allow a keyword once).
    static func pathAndParameters(_ arg: ArraySlice<UInt8>, keyword: String, usage: String, badPath: CommandError,
                                  allowNull: Bool, allowPostmaster: Bool)
        -> Result<(AddressParser.ParsedPath, [Parameter]), CommandError>
    {
        guard let rest = dropKeyword(keyword, arg) else { return .failure(.syntax(usage: usage)) }
        let (pathResult, paramText) = AddressParser.parsePath(rest, allowNull: allowNull, allowPostmaster: allowPostmaster)
        guard let path = pathResult else { return .failure(badPath) }
        switch splitParameters(paramText) {
        case .failure(let e): return .failure(e)
        case .success(let params):
            guard Set(params.map(\.keyword)).count == params.count else { return .failure(.badParameter) }
            return .success((path, params))
        }
    }

    static func parseNotify(_ v: ArraySlice<UInt8>) -> DSNNotify? {
        var n = DSNNotify()
        let words = String(decoding: v, as: UTF8.self).uppercased().split(separator: ",", omittingEmptySubsequences: false)
        for w in words {
            switch w {
            case "NEVER": if n.never { return nil }; n.never = true
            case "SUCCESS": if n.success { return nil }; n.success = true
            case "FAILURE": if n.failure { return nil }; n.failure = true
            case "DELAY": if n.delay { return nil }; n.delay = true
            default: return nil
            }
        }
        // RFC 3461 4.1: NEVER must appear alone.
        if n.never && words.count != 1 { return nil }
        return n
    }

    struct Parameter {
        let keyword: String          // uppercased
        let value: ArraySlice<UInt8>?
    }

    /// `esmtp-param *(SP esmtp-param)` (RFC 5321 4.1.2); extra spaces between parameters are tolerated.
    static func splitParameters(_ text: ArraySlice<UInt8>) -> Result<[Parameter], CommandError> {
        var out: [Parameter] = []
        for word in text.split(separator: UInt8(ascii: " ")) {
            let eq = word.firstIndex(of: UInt8(ascii: "="))
            let key = word[word.startIndex..<(eq ?? word.endIndex)]
            guard let first = key.first, isAlnum(first),
                  key.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }) else { return .failure(.badParameter) }
            var value: ArraySlice<UInt8>? = nil
            if let eq {
                let v = word[word.index(after: eq)...]
                // esmtp-value: 1*(%d33-60 / %d62-126), extended by RFC 6531 with UTF-8.
                guard !v.isEmpty, v.allSatisfy({ ($0 >= 33 && $0 != 61 && $0 != 127) }) else {
                    return .failure(.badParameter)
                }
                value = v
            }
            out.append(Parameter(keyword: String(decoding: key, as: UTF8.self).uppercased(), value: value))
        }
        return .success(out)
    }

    // MARK: Helpers

    /// Case-insensitive `FROM:` / `TO:`, then optional spaces (RFC 5321 has none; many clients send one).
    static func dropKeyword(_ keyword: String, _ arg: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let k = Array(keyword.utf8)
        guard arg.count >= k.count else { return nil }
        for (i, b) in zip(arg.indices, k) where asciiUpper(arg[i]) != b { return nil }
        var rest = arg.dropFirst(k.count)
        while rest.first == UInt8(ascii: " ") { rest = rest.dropFirst() }
        return rest
    }

    static func trimmed(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = s
        while s.first == UInt8(ascii: " ") { s = s.dropFirst() }
        while s.last == UInt8(ascii: " ") { s = s.dropLast() }
        return s
    }

    /// A domain (letters, digits, `-`, `.`, and `_`, which real Windows hosts send) or an address literal.
    static func isValidHeloName(_ name: ArraySlice<UInt8>) -> Bool {
        if name.first == UInt8(ascii: "[") { return AddressParser.parseAddressLiteral(name) != nil }
        guard name.count <= 255 else { return false }
        return name.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
    }

    static func isValidUTF8(_ bytes: ArraySlice<UInt8>) -> Bool {
        var it = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}

@inline(__always) func isAlnum(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
}
@inline(__always) func asciiUpper(_ b: UInt8) -> UInt8 { (b >= 0x61 && b <= 0x7a) ? b - 0x20 : b }
