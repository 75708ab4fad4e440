import Config
import Foundation
import MailModel
import PolicyCheck
import PolicyLanguage
import RelayPolicy
import XCTest

final class RelayPolicyTests: XCTestCase {
    var fixtures: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }

    func engine(_ name: String) throws -> (RelayEngine, Configuration) {
        let (config, diagnostics) = ConfigLoader.load(path: fixtures.appendingPathComponent(name).path)
        XCTAssertEqual(diagnostics.filter { $0.severity == .error }.map(\.description), [])
        let engine = try XCTUnwrap(config.relayEngine(hostname: config.hostname ?? "mx.test", localAddresses: [.v4(0x7f00_0001)]))
        return (engine, config)
    }

    /// Every condition at every boundary (boundaries.cases names each expected verdict and rule line).
    func testBoundaryCases() throws {
        let (engine, _) = try engine("boundaries.conf")
        var reader = CaseFileReader(defaultListener: "mx")
        let cases = reader.read(path: fixtures.appendingPathComponent("boundaries.cases").path, reader: FileSourceReader())
        XCTAssertEqual(reader.diagnostics.map(\.description), [])
        XCTAssertEqual(cases.count, 38)
        let (passed, failures) = CaseRunner.run(cases, engine: engine)
        for f in failures { XCTFail("\(f.testCase.location): \(f.message)\n\(f.explanation)") }
        XCTAssertEqual(passed, cases.count)
    }

    /// The explain trace, word for word, against a golden file.
    func testExplainGolden() throws {
        let (engine, _) = try engine("boundaries.conf")
        func x(_ client: String, _ rcpts: [String], listener: String = "mx", from: String = "<>") -> String {
            Explanation(engine: engine, session: SessionFacts(listener: listener, client: IPAddress(client)!),
                        sender: FactsParser.sender(from)!, recipients: rcpts.map { FactsParser.recipient($0)! }).text
        }
        let out = [
            x("203.0.113.1", ["a@sub.example.net", "a%b@example.org", "a@xexample.org"]),
            x("192.0.2.1", ["a@[127.0.0.1]", "Postmaster"]),
            x("203.0.113.1", ["a@elsewhere.test"], listener: "submission"),
        ].joined(separator: "\n")
        let golden = try String(contentsOf: fixtures.appendingPathComponent("explain.golden"), encoding: .utf8)
            .replacingOccurrences(of: "FIXTURES/", with: fixtures.path + "/")
        XCTAssertEqual(out, golden)
    }

    /// 10,000 networks and 10,000 domains: loading well under a second, a decision in microseconds.
    func testLargeListsLoadAndDecideFast() throws {
        struct Memory: SourceReader {
            let files: [String: String]
            func read(_ path: String) -> String? { files[path] }
            func resolve(_ path: String, from: String) -> String { path }
        }
        var nets = "", domains = ""
        for i in 0..<5_000 { nets += "10.\(i / 256).\(i % 256).0/24\n2001:db8:\(String(i, radix: 16))::/48\n" }
        for i in 0..<10_000 { domains += (i % 2 == 0 ? "" : ".") + "customer\(i).example\n" }
        let text = """
            networks big file "nets.txt"
            domains many file "domains.txt"
            rules {
                relay from <big>
                relay to <many>
                refuse
            }
            """
        let reader = Memory(files: ["main.conf": text, "nets.txt": nets, "domains.txt": domains])
        let started = Date()
        let (config, diagnostics) = ConfigLoader.load(path: "main.conf", reader: reader)
        let loadTime = Date().timeIntervalSince(started)
        XCTAssertEqual(diagnostics.filter { $0.severity == .error }.count, 0)
        XCTAssertLessThan(loadTime, 1.0, "loading 20,000 entries took \(loadTime) s")
        let engine = try XCTUnwrap(config.relayEngine(hostname: "mx.test", localAddresses: []))

        let queries: [(RelayQuery, String)] = [
            (q("10.19.135.77", "x@elsewhere.test"), "relay"),           // network 4999: 10.19.135.0/24
            (q("2001:db8:1387::5", "x@elsewhere.test"), "relay"),
            (q("10.20.0.1", "x@elsewhere.test"), "refuse"),
            (q("192.0.2.1", "x@customer9998.example"), "relay"),
            (q("192.0.2.1", "x@a.b.customer9999.example"), "relay"),
            (q("192.0.2.1", "x@customer9999.example"), "refuse"),        // odd entries are subdomains only
            (q("192.0.2.1", "x@customer10000.example"), "refuse"),
        ]
        for (query, want) in queries { XCTAssertEqual("\(engine.decide(query).verdict)", want, "\(query.recipient)") }
        let rounds = 20_000
        let t0 = Date()
        var relayed = 0
        for i in 0..<rounds {
            if case .relay = engine.decide(queries[i % queries.count].0).verdict { relayed += 1 }
        }
        let perDecision = Date().timeIntervalSince(t0) / Double(rounds)
        XCTAssertEqual(relayed, rounds / queries.count * 4 + min(rounds % queries.count, 4))
        // Microseconds in a release build; the debug build of the tests gets ten times the room.
        XCTAssertLessThan(perDecision, 100e-6, "a decision took \(perDecision * 1e6) µs")
        print("relay-policy: loaded 20,000 entries in \(Int(loadTime * 1000)) ms; \(String(format: "%.2f", perDecision * 1e6)) µs a decision")
    }

    func q(_ client: String, _ rcpt: String) -> RelayQuery {
        RelayQuery(session: SessionFacts(listener: "default", client: IPAddress(client)!), sender: .null,
                   recipient: FactsParser.recipient(rcpt)!)
    }
}
