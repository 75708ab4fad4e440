import MailModel
import PolicyLanguage
import RelayPolicy
import SMTPProtocol

/// Named lists and relay rules (docs/policy-language.md, "Relay rules").
extension ConfigLoader {
    static let listKinds = ["networks", "domains", "users", "pins"]
    static let verbs = ["relay", "refuse", "defer"]
    static let conditionKeywords = ["from", "to", "sender", "authenticated", "certificate", "listener", "tls", "reply"]

    // MARK: Named lists

    mutating func namedList(_ d: Directive, _ lists: inout NamedLists) {
        guard let nameArg = d.arguments.first else {
            error(d.location, "'\(d.name)' needs a name: \(d.name) NAME { ... } or \(d.name) NAME file \"PATH\"")
            return
        }
        let name = nameArg.text
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            error(nameArg.location, "list name '\(name)' may hold only letters, digits, '-', '_' and '.'")
            return
        }
        if let previous = lists.locations[name] {
            error(nameArg.location, "'\(name)' is already defined as a \(previous.kind) list (line \(previous.at.line))")
            return
        }
        lists.locations[name] = (d.name, nameArg.location)

        if d.name == "ca" {
            guard d.arguments.count == 3, d.arguments[1].text == "file", d.block == nil else {
                error(d.location, "write: ca NAME file \"PATH\" (a PEM file of CA certificates)")
                return
            }
            lists.authorities[name] = reader.resolve(d.arguments[2].text, from: d.location.file)
            return
        }

        let entries = listEntries(d)
        switch d.name {
        case "networks":
            var nets: [IPNetwork] = []
            for (text, at) in entries {
                if let n = IPNetwork(text) { nets.append(n) } else {
                    error(at, "'\(text)' is not a network (write 192.0.2.0/24, 2001:db8::/32 or one address)")
                }
            }
            lists.networks[name] = (NetworkSet(nets), nets)
        case "domains":
            var set = DomainSet()
            for (text, at) in entries {
                if let e = DomainSet.entry(text) { set.insert(e.name, subdomains: e.subdomains) } else {
                    error(at, "'\(text)' is not a domain (write example.org, or .example.org for its subdomains)")
                }
            }
            lists.domains[name] = set
        case "users":
            lists.users[name] = Set(entries.map(\.0))
        default:  // pins
            var set = Set<String>()
            for (text, at) in entries {
                if let p = CertificateFacts.parsePin(text) { set.insert(p) } else {
                    error(at, "'\(text)' is not a pin (write sha256: and 64 hex digits of the SubjectPublicKeyInfo hash)")
                }
            }
            lists.pins[name] = set
        }
    }


    /// Entries of a list: inline in its block (every word), or one a line from `file "PATH"`.
    mutating func listEntries(_ d: Directive) -> [(String, SourceLocation)] {
        let rest = Array(d.arguments.dropFirst())
        if let block = d.block {
            if !rest.isEmpty { error(rest[0].location, "a list takes a block or file \"PATH\", not both") }
            return blockEntries(block)
        }
        guard rest.count == 2, rest[0].text == "file" else {
            error(d.location, "write: \(d.name) \(d.arguments[0].text) { ENTRY ... } or \(d.name) \(d.arguments[0].text) file \"PATH\"")
            return []
        }
        let path = reader.resolve(rest[1].text, from: d.location.file)
        guard let text = reader.read(path) else {
            error(rest[1].location, "cannot read list file \(path)")
            return []
        }
        var out: [(String, SourceLocation)] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let leading = line.prefix { $0 == " " || $0 == "\t" }.count
            let entry = line.trimmingWhitespace()
            if entry.isEmpty { continue }
            let at = SourceLocation(file: path, line: n + 1, column: leading + 1)
            if entry.contains(where: { $0 == " " || $0 == "\t" }) {
                error(at, "one entry a line: '\(entry)' holds a space")
                continue
            }
            out.append((String(entry), at))
        }
        return out
    }

    /// Every word of a block is an entry: `{ a b` newline `c }` holds a, b and c.
    mutating func blockEntries(_ block: [Directive]) -> [(String, SourceLocation)] {
        var out: [(String, SourceLocation)] = []
        for e in block {
            out.append((e.name, e.location))
            for a in e.arguments { out.append((a.text, a.location)) }
            if e.block != nil { error(e.location, "list entries take no block") }
        }
        return out
    }

    // MARK: Rules

    mutating func interpretRelay(_ directives: [Directive], _ c: inout Configuration, file: String?) {
        var relay = RelayRules()
        var sawRules = false
        for d in directives {
            switch d.name {
            case "local-names":
                let entries = d.block.map { blockEntries($0) } ?? d.arguments.map { ($0.text, $0.location) }
                if entries.isEmpty { error(d.location, "local-names needs one or more names") }
                for (text, at) in entries {
                    if let e = DomainSet.entry(text) { relay.localNames.insert(e.name, subdomains: e.subdomains) } else {
                        error(at, "'\(text)' is not a domain name")
                    }
                }
            case "allow-untrusted-routing":
                guard let a = single(d) else { continue }
                switch a.text {
                case "yes": relay.allowUntrustedRouting = true
                case "no": relay.allowUntrustedRouting = false
                default: error(a.location, "allow-untrusted-routing is yes or no, not '\(a.text)'")
                }
            default:  // rules
                sawRules = true
                relay.location = d.location
                guard let block = d.block else {
                    error(d.location, "'rules' needs a block: rules { relay from <office> ... refuse }")
                    continue
                }
                if !d.arguments.isEmpty { error(d.arguments[0].location, "'rules' takes no arguments") }
                for e in block {
                    if let rule = rule(e, c) { relay.rules.append(rule) }
                }
                // A rule that failed to read has its own error; judge the list only when all read.
                if relay.rules.count == block.count { checkRuleList(relay.rules, d) }
            }
        }
        if sawRules {
            c.relay = relay
        } else {
            c.relay = Self.defaultRules
            if let file {
                warning(SourceLocation(file: file, line: 1, column: 1),
                        "no 'rules' block: the embedded default's rules apply (only 127.0.0.1 and ::1 may relay)")
            }
        }
    }

    /// The embedded default's rules, for a configuration that has none.
    static var defaultRules: RelayRules {
        var parser = Parser(reader: FileSourceReader())
        let directives = parser.parse(text: DefaultConfiguration.text, file: DefaultConfiguration.fileName)
        var loader = ConfigLoader()
        return loader.interpret(directives).relay ?? RelayRules()
    }

    /// The list must end in an unconditional refuse or defer, so nothing can fall through to relaying.
    mutating func checkRuleList(_ rules: [Rule], _ d: Directive) {
        guard let last = rules.last else {
            error(d.location, "'rules' is empty: write the relay rules, ending in an unconditional 'refuse'")
            return
        }
        if case .relay = last.verdict {
            error(last.location, "the last rule must be an unconditional 'refuse' (or 'defer'), so that nothing falls through to relaying")
        } else if !last.conditions.isEmpty {
            error(last.location, "the last rule must be unconditional: add a final 'refuse' so that every recipient meets a rule")
        }
        if let firstFinal = rules.firstIndex(where: { $0.conditions.isEmpty }), firstFinal < rules.count - 1 {
            warning(rules[firstFinal + 1].location, "this rule is never reached: the rule at line \(rules[firstFinal].location.line) matches everything")
        }
    }

    mutating func rule(_ d: Directive, _ c: Configuration) -> Rule? {
        guard Self.verbs.contains(d.name) else {
            // Words other mail systems use for the same verdicts.
            let synonyms = ["allow": "relay", "accept": "relay", "permit": "relay", "deny": "refuse", "reject": "refuse",
                            "drop": "refuse", "tempfail": "defer", "defer_if_permit": "defer"]
            if let s = synonyms[d.name.lowercased()] {
                error(d.location, "unknown verdict '\(d.name)'; did you mean '\(s)'?")
            } else {
                unknown(d, among: Self.verbs, context: "verdict")
            }
            return nil
        }
        if d.block != nil { error(d.location, "a rule takes no block") }
        var conditions: [Condition] = []
        var reply: Reply?
        var failed = false
        var args = d.arguments[...]

        func next(_ keyword: Argument, _ what: String) -> Argument? {
            guard let a = args.first else {
                error(keyword.location, "'\(keyword.text)' needs \(what)")
                failed = true
                return nil
            }
            args = args.dropFirst()
            return a
        }

        while let kw = args.first {
            args = args.dropFirst()
            switch kw.text {
            case "from":
                guard let a = next(kw, "a network or <list>") else { break }
                if let l = networkReference(a, c) { conditions.append(.from(l)) } else { failed = true }
            case "to", "sender":
                guard let a = next(kw, "a domain or <list>") else { break }
                if let l = domainReference(a, c) { conditions.append(kw.text == "to" ? .to(l) : .sender(l)) } else { failed = true }
            case "authenticated":
                if let a = args.first, !Self.conditionKeywords.contains(a.text) {
                    args = args.dropFirst()
                    if let l = userReference(a, c) { conditions.append(.authenticated(l)) } else { failed = true }
                } else {
                    conditions.append(.authenticated(nil))
                }
            case "certificate":
                guard let sub = next(kw, "ca NAME, pin <list>, subject \"DN\" or san NAME") else { break }
                guard let value = next(sub, "a value") else { break }
                switch sub.text {
                case "ca":
                    if c.lists.authorities[value.text] == nil {
                        error(value.location, "no CA named '\(value.text)': define it with ca \(value.text) file \"PATH\"")
                        failed = true
                    } else {
                        conditions.append(.certificateCA(value.text))
                    }
                case "pin":
                    if let l = pinReference(value, c) { conditions.append(.certificatePin(l)) } else { failed = true }
                case "subject": conditions.append(.certificateSubject(value.text))
                case "san": conditions.append(.certificateSAN(value.text))
                default:
                    var m = "unknown certificate condition '\(sub.text)'"
                    if let h = Self.nearest(sub.text, in: ["ca", "pin", "subject", "san"]) { m += "; did you mean '\(h)'?" }
                    error(sub.location, m)
                    failed = true
                }
            case "listener":
                guard let a = next(kw, "a listener name") else { break }
                if !c.listeners.contains(where: { $0.name == a.text }) {
                    var m = "no listener named '\(a.text)'"
                    if let h = Self.nearest(a.text, in: c.listeners.map(\.name)) { m += "; did you mean '\(h)'?" }
                    error(a.location, m)
                    failed = true
                } else {
                    conditions.append(.listener(a.text))
                }
            case "tls":
                conditions.append(.tls)
            case "reply":
                if let r = parseReply(kw, &args, verb: d.name) { reply = r } else { failed = true }
            default:
                var m = "unknown condition '\(kw.text)'"
                if let h = Self.nearest(kw.text, in: Self.conditionKeywords) { m += "; did you mean '\(h)'?" }
                error(kw.location, m)
                failed = true
                args = args.dropFirst(args.count)   // what follows can't be read reliably: one error a rule
            }
        }
        if failed { return nil }

        let verdict: Verdict
        switch d.name {
        case "relay":
            if reply != nil { error(d.location, "'reply' belongs to refuse and defer; relay answers 250") ; return nil }
            // Who (from, authenticated, certificate) or where (to): without either, anyone could relay
            // anywhere. The sender address identifies nobody: it is forged at will.
            let identifies = conditions.contains { c in
                if case .to = c { return true }
                return c.trustsClient
            }
            if !identifies {
                if conditions.contains(where: { if case .sender = $0 { return true }; return false }) {
                    warning(d.location, "this rule relays on the sender address alone, which any client can forge; add from, authenticated or certificate")
                } else {
                    error(d.location, "this 'relay' names neither who (from, authenticated, certificate) nor where (to): it makes an open relay")
                    return nil
                }
            }
            let restrictsDestination = conditions.contains { if case .to = $0 { return true }; return false }
            for case .from(let l) in conditions where l.set.coversEverything && !restrictsDestination {
                warning(d.location, "\(l.label) holds every address: this rule relays for the whole Internet")
            }
            verdict = .relay
        case "refuse":
            verdict = .refuse(reply ?? .relayDenied)
        default:
            verdict = .defer_(reply ?? Reply(450, EnhancedStatus(4, 7, 1), "Relaying temporarily refused, try again later"))
        }
        return Rule(verdict: verdict, conditions: conditions, location: d.location, text: Self.ruleText(d))
    }

    /// `reply CODE X.Y.Z "text"`: the code's class must match the verdict (refuse 5xx, defer 4xx).
    mutating func parseReply(_ kw: Argument, _ args: inout ArraySlice<Argument>, verb: String) -> Reply? {
        guard args.count >= 3 else {
            error(kw.location, "write: reply CODE X.Y.Z \"text\" (for example reply 550 5.7.1 \"Relaying denied\")")
            args = args.dropFirst(args.count)
            return nil
        }
        let codeArg = args[args.startIndex], statusArg = args[args.startIndex + 1], textArg = args[args.startIndex + 2]
        args = args.dropFirst(3)
        let wantClass = verb == "defer" ? 4 : 5
        guard let code = Int(codeArg.text), codeArg.text.count == 3, code / 100 == wantClass, (code % 100) / 10 <= 5 else {
            error(codeArg.location, "\(verb) needs a \(wantClass)xx reply code, not '\(codeArg.text)'")
            return nil
        }
        guard let status = EnhancedStatus(parsing: statusArg.text), status.klass == wantClass else {
            error(statusArg.location, "'\(statusArg.text)' is not an enhanced status code of class \(wantClass) (RFC 3463, e.g. \(wantClass).7.1)")
            return nil
        }
        let text = textArg.text
        guard !text.isEmpty, text.utf8.count <= 200, text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7f }) else {
            error(textArg.location, "reply text must be 1 to 200 printable ASCII characters")
            return nil
        }
        return Reply(code, status, text)
    }

    // MARK: References

    mutating func listName(_ a: Argument) -> String? {
        guard !a.quoted, a.text.hasPrefix("<"), a.text.hasSuffix(">"), a.text.count > 2 else { return nil }
        return String(a.text.dropFirst().dropLast())
    }

    mutating func missingList(_ a: Argument, _ name: String, kind: String, _ c: Configuration) {
        if let other = c.lists.locations[name] {
            error(a.location, "<\(name)> is a \(other.kind) list, not a \(kind) list")
        } else {
            var m = "no \(kind) list named <\(name)>"
            let known = c.lists.locations.filter { $0.value.kind == kind }.map(\.key)
            if let h = Self.nearest(name, in: known) { m += "; did you mean <\(h)>?" }
            error(a.location, m)
        }
    }

    mutating func networkReference(_ a: Argument, _ c: Configuration) -> ListReference<NetworkSet>? {
        if let name = listName(a) {
            guard let l = c.lists.networks[name] else { missingList(a, name, kind: "networks", c); return nil }
            return ListReference(label: "<\(name)>", set: l.0)
        }
        guard let n = IPNetwork(a.text) else {
            error(a.location, "'\(a.text)' is neither a network nor a <list>")
            return nil
        }
        return ListReference(label: a.text, set: NetworkSet([n]))
    }

    mutating func domainReference(_ a: Argument, _ c: Configuration) -> ListReference<DomainSet>? {
        if let name = listName(a) {
            guard let l = c.lists.domains[name] else { missingList(a, name, kind: "domains", c); return nil }
            return ListReference(label: "<\(name)>", set: l)
        }
        guard let e = DomainSet.entry(a.text) else {
            error(a.location, "'\(a.text)' is neither a domain nor a <list>")
            return nil
        }
        var s = DomainSet()
        s.insert(e.name, subdomains: e.subdomains)
        return ListReference(label: a.text, set: s)
    }

    mutating func userReference(_ a: Argument, _ c: Configuration) -> ListReference<Set<String>>? {
        if let name = listName(a) {
            guard let l = c.lists.users[name] else { missingList(a, name, kind: "users", c); return nil }
            return ListReference(label: "<\(name)>", set: l)
        }
        return ListReference(label: a.text, set: [a.text])
    }

    mutating func pinReference(_ a: Argument, _ c: Configuration) -> ListReference<Set<String>>? {
        if let name = listName(a) {
            guard let l = c.lists.pins[name] else { missingList(a, name, kind: "pins", c); return nil }
            return ListReference(label: "<\(name)>", set: l)
        }
        guard let p = CertificateFacts.parsePin(a.text) else {
            error(a.location, "'\(a.text)' is neither a pin (sha256:HEX) nor a <list>")
            return nil
        }
        return ListReference(label: a.text, set: [p])
    }

    static func ruleText(_ d: Directive) -> String {
        ([d.name] + d.arguments.map { $0.quoted ? "\"\($0.text)\"" : $0.text }).joined(separator: " ")
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return s
    }
}
