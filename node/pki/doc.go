// Package pki is Shoal's offline public key infrastructure: there is no
// online certificate authority to run, reach or keep available.
//
// It has three levels, each signed by the one above:
//
//	root CA    created once by an operator, key kept offline (CreateCA);
//	           names the mesh's trust domain, spiffe://TRUSTDOMAIN
//	node CA    one per node, signed by the root (CreateNodeCA); an X.509
//	           name constraint limits it to spiffe://NODE.TRUSTDOMAIN, so the
//	           standard chain verification refuses anything it signs for
//	           another node, and a path length of 0 forbids sub-CAs
//	leaf       short-lived, minted by the agent itself for the node or one of
//	           its services (Bundle.IssueLeaf): spiffe://NODE.TRUSTDOMAIN/node
//	           or spiffe://NODE.TRUSTDOMAIN/svc/SERVICE
//
// An agent loads its node CA and the roots into a Bundle (LoadBundle). With
// it, it issues leaves, checks the leaf a peer presents in a TLS handshake
// (VerifyPeer), and signs what it gossips with the node CA key (Sign), which
// any other node checks against the roots (VerifySigned).
//
// All keys are ECDSA P-256 and all cryptography is the standard library's.
// Functions that depend on the time take it as an argument, so tests can
// move the clock.
package pki
