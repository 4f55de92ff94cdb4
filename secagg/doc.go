// Package secagg is secure aggregation for one region's round: the server
// (the regional aggregator) learns the sum of its surviving clients'
// quantized update vectors and nothing else about any one of them, and the
// sum survives clients dropping out at any point. It implements SecAgg+
// (Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, "Secure Single-Server
// Aggregation with (Poly)Logarithmic Overhead") over the protocol of
// Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
// Machine Learning"), in its honest-but-curious variant.
//
// The package is pure: no network, no clock, no goroutines. Each party is a
// state machine — Client with one method per round, Server with a Handle
// method per incoming message and a Finish method per round — and the
// messages are plain structs with a versioned, canonical binary encoding
// (messages.go) that a runner carries over NATS. Simulate drives a whole
// session in memory, for tests and benchmarks. All randomness comes from an
// injected io.Reader (nil means crypto/rand), so a seeded reader replays a
// session exactly.
//
// # Quantization
//
// Updates are real vectors, the protocol sums ring elements. Quantizer clips
// every coordinate to [-clip, clip], scales it by scale and rounds it
// stochastically (unbiased: E[q(x)] = x·scale) into Z_{2^b} in two's
// complement. The sum of n inputs decodes without wrapping when
// n·⌈clip·scale⌉ <= 2^(b-1) - 1; NewQuantizer refuses, with ErrHeadroom
// naming n, clip, scale and b, when it does not hold. Edge noise is added
// before quantizing; the clip must cover it.
//
// # Parameters and the graph
//
// Params fix n clients (IDs 1..n), the graph degree k, the Shamir threshold
// t, the fewest survivors MinSurvivors, the ring Z_{2^b} and the length d.
// In Bonawitz et al. every client shares with and masks against all n-1
// others: Θ(n²) work and Θ(n²·d) in the worst case for the server when
// clients drop. SecAgg+ replaces the complete graph with a random k-regular
// graph, k = O(log n): a Harary graph H(k, n) (each vertex joined to the k/2
// nearest on either side of a ring) on a random relabelling of the clients.
// ChooseParams picks the smallest k and largest t for which, by union
// bounds, every client keeps t live neighbours under a dropout fraction δ
// (except with probability 2^-η), no honest client has t colluding
// neighbours under a corrupt fraction γ, and the graph without dropped and
// colluding clients stays connected (except with probability 2^-σ); with
// δ = 0.3, γ = 0.1 that is k = 42, t = 17 at n = 100 and k = 88, t = 36 at
// n = 1000. Degree n-1 gives back the original protocol, which
// survives any dropout set of up to n-1-t clients (and MinSurvivors).
//
// # Rounds
//
// Round 0, advertise keys. Each client u draws two X25519 key pairs,
// (c_u^SK, c_u^PK) to agree share-encryption keys and (s_u^SK, s_u^PK) to
// agree mask seeds, and sends the public halves (AdvertiseKeys). The server
// closes the round (FinishAdvertiseKeys) on the clients that answered, U1,
// builds the graph on them and sends each client its neighbours' keys
// (NeighbourKeys).
//
// Round 1, share keys. Client u draws a self-mask seed b_u, splits s_u^SK and
// b_u t-of-|N(u)| among its neighbours with Shamir's scheme over F_p,
// p = 2^61-1 (7-byte chunks, the holder's ID as evaluation point), and
// encrypts each neighbour's pair of shares with AES-256-GCM under
// HKDF-SHA256(X25519(c_u^SK, c_v^PK)) bound to the session and the pair
// (ShareKeys). It also commits to b_u (SHA-256). The clients that answered
// form U2; the server prunes any client left with fewer than t neighbours in
// U2 (no one has masked against it yet, so pruning costs nothing) and
// forwards each client the ciphertexts addressed to it (ShareBundle).
//
// Round 2, masked input. Client u decrypts its neighbours' shares and sends
//
//	y_u = x_u + PRG(b_u) + Σ_{v ∈ N(u) ∩ U2} ±PRG(s_{u,v})  mod 2^b
//
// (MaskedInput), with + when u < v and - otherwise, where s_{u,v} =
// HKDF-SHA256(X25519(s_u^SK, s_v^PK)) is the same 16-byte seed at u and v.
// PRG is AES-128-CTR from a zero IV read as little-endian uint32s. The
// client then forgets s_u^SK and b_u. The server adds each y_u into a
// running sum as it arrives (O(d) memory); the senders form U3. Before it
// asks anyone to reveal anything (FinishMaskedInput) it checks that
// |U3| >= MinSurvivors, that every client of U2 has t neighbours in U3, and
// that U3's graph is connected — a disconnected graph would let it unmask
// each piece's sum separately — and otherwise ends the session
// (ErrTooFewSurvivors, ErrDisconnected) with nothing revealed.
//
// Round 3, unmasking. The server asks each survivor (UnmaskRequest) for its
// shares of b_v for every neighbour v ∈ U3 and of s_v^SK for every
// neighbour v ∈ U2 \ U3, and says how many survived. A client answers once
// (UnmaskResponse), refuses below MinSurvivors, and refuses a request that
// does not split exactly the neighbours whose shares it holds — so no client
// ever reveals both secrets of one neighbour. With t shares of each secret
// the server (Finish) rebuilds every b_u of U3 and every s_u^SK of U2 \ U3,
// checks them against the commitment and the advertised s_u^PK, subtracts
// PRG(b_u) for u ∈ U3 and, for each dropped u and each neighbour v ∈ U3,
// removes the ±PRG(s_{u,v}) that v added. Pairwise masks between two
// survivors cancel in the sum. What is left is Σ_{u ∈ U3} x_u mod 2^b.
// Fewer than t shares of any secret fails with ErrTooFewSurvivors and the
// masked sum is discarded.
//
// Costs: a client does 2k key agreements and k+1 mask expansions of d
// elements, O(k·d) = O(d·log n); the server sums |U3| vectors and expands
// |U3| self masks plus one mask per edge between U2 \ U3 and U3, at most
// O(n·k·d) = O(n·log n·d), against O(n²·d) for the complete graph.
//
// # Threat model
//
// The server is honest but curious: it follows the protocol (it builds the
// graph at random, forwards ciphertexts intact, sends consistent unmasking
// requests) and tries to learn from what it sees. It may collude with up to
// a fraction γ of the clients (Security.Corrupt; the parameters are chosen
// for it). Up to a fraction δ of the clients (Security.Dropout) may drop at
// any point, independently of the graph. Then the server's view is
// simulatable from Σ_{u ∈ U3} x_u alone, except with probability 2^-σ over
// the graph: every masked input is uniform on Z_{2^b}^d given everything
// else the server sees (TestMaskedInputUniform), and fewer than t shares of
// a secret are independent of it. Not covered: a malicious server, which
// could lie about who dropped to different clients (Bonawitz et al.'s
// consistency-check round and signed keys, and Bell et al.'s malicious
// variant, are not implemented), clients that send out-of-range or
// inconsistent values (the sum is then wrong, not leaked: secure
// aggregation does not validate inputs), and a server that chooses the
// dropouts after seeing the graph (the union bounds assume independence;
// the FinishMaskedInput checks turn such a draw into a safe failure).
//
// # What the ledger may claim
//
// Secure aggregation is not differential privacy. It changes what the
// regional operator sees — the survivors' sum instead of each update — and
// nothing else. Consequently:
//
//   - Without edge noise the regional operator's ε stays ∞: the sum of
//     un-noised updates is not DP, whoever computes it.
//   - With edge noise σ_e·C on each client, the client's own noise protects
//     it against the regional operator with or without secagg (quantizing
//     and clipping after the noise is post-processing), and that is all the
//     ledger may claim from this package. The other survivors' noise is not
//     provably added to it: each client quantizes its noised update on its
//     own, so the sum is not a post-processing of x_c plus a Gaussian, and
//     some of the others may be colluders who know their noise.
//   - Crediting the region's whole noise needs a mechanism whose analysis
//     covers per-client discretization and the modular wrap — the
//     distributed discrete Gaussian (Kairouz, Liu, Steinke 2021), counting
//     only the MinSurvivors minus ⌊γn⌋ clients guaranteed honest — and
//     that is not implemented here.
//   - Every claim is conditional on the threat model above; the ledger
//     should record Params, Security (δ, γ, η, σ) and the session's
//     survivor count beside the ε it reports, and a round that ended in a
//     secagg error keeps its write-ahead cost like any aborted round.
package secagg
