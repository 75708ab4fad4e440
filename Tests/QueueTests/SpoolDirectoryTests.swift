import Foundation
import MailModel
import XCTest
@testable import Queue

final class SpoolDirectoryTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "rg-spool-\(UUID().uuidString)"
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    func envelope(_ id: QueueID) -> StoredEnvelope {
        let env = Envelope(sender: .null, recipients: [
            Recipient(path: .mailbox(Mailbox(localPart: "\"a b\"", domain: .name(DomainName("example.net")!))),
                      notify: DSNNotify(failure: true), originalRecipient: OriginalRecipient(addressType: "rfc822", address: "x@y"))])
        return StoredEnvelope(id: id, received: 1000, envelope: env, size: 5,
                              client: .init(address: "127.0.0.1", helo: "h", session: "1", listener: "default", protocol: "ESMTP"))
    }

    func testStoreLoadRoundTrip() throws {
        let spool = try SpoolDirectory(root: root)
        let id = SpoolDirectory.newID()
        try spool.store(id: id, header: QueueFile.header(envelope(id)), data: [Array("ab".utf8), Array("c\r\n".utf8)])
        let entry = try spool.load(id.text)
        XCTAssertEqual(entry.envelope, envelope(id))
        XCTAssertEqual(Array(entry.message), Array("abc\r\n".utf8))
        XCTAssertEqual(entry.envelope.recipients[0].address, "\"a b\"@example.net")
        XCTAssertEqual(entry.envelope.recipients[0].notify, ["FAILURE"])
        XCTAssertEqual(spool.ids(), [id])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/tmp"), [])
    }

    func testNeverReplacesAQueuedMessage() throws {
        let spool = try SpoolDirectory(root: root)
        let id = SpoolDirectory.newID()
        try spool.store(id: id, header: QueueFile.header(envelope(id)), data: [Array("first".utf8)])
        XCTAssertThrowsError(try spool.store(id: id, header: QueueFile.header(envelope(id)), data: [Array("second".utf8)]))
        XCTAssertEqual(Array(try spool.load(id.text).message), Array("first".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/tmp"), [], "failed store left a file")
    }

    func testRecoveryRemovesTemporaryAndQuarantinesUnreadable() throws {
        let spool = try SpoolDirectory(root: root)
        let good = SpoolDirectory.newID()
        try spool.store(id: good, header: QueueFile.header(envelope(good)), data: [[]])
        FileManager.default.createFile(atPath: root + "/tmp/" + SpoolDirectory.newID().text, contents: Data("half".utf8))
        let bad = QueueID(micros: 5, random: 5).text
        FileManager.default.createFile(atPath: root + "/queue/" + bad, contents: Data("RELAYGATE-QUEUE 1\n{broken\n".utf8))
        FileManager.default.createFile(atPath: root + "/queue/stray.txt", contents: Data("x".utf8))
        let r = try SpoolDirectory(root: root).recover()
        XCTAssertEqual(r.queued, 1)
        XCTAssertEqual(r.removedTemporary, 1)
        XCTAssertEqual(Set(r.quarantined), [bad, "stray.txt"])
        XCTAssertEqual(spool.ids(), [good])
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/quarantine/" + bad), "quarantine keeps, never deletes")
    }

    func testDecodeRefusesOtherVersionsAndGarbage() {
        XCTAssertThrowsError(try QueueFile.decode(Array("RELAYGATE-QUEUE 2\n{}\n".utf8))) {
            XCTAssertEqual($0 as? QueueFile.DecodeError, .unsupportedVersion("2"))
        }
        XCTAssertThrowsError(try QueueFile.decode(Array("hello".utf8)))
        XCTAssertThrowsError(try QueueFile.decode(Array("RELAYGATE-QUEUE 1\n{\"id\":1}\n".utf8)))
    }
}
