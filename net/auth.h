// Pre-shared-key authentication of a connection: HMAC-SHA256 over both sides' nonces
// (net/PROTOCOL.md, "Handshake and authentication").
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "net/messages.h"

namespace dgpt::net {

using AuthKey = std::vector<uint8_t>;

// Reads a key file (surrounding whitespace is ignored). Errors: unreadable, empty, shorter
// than 16 bytes.
Result<AuthKey> LoadAuthKey(const std::string& path);

Bytes32 RandomNonce();

// HMAC-SHA256(key, "dgpt-auth-v1" || role || peer_nonce || own_nonce); role is 'C' for the side
// that connected and 'S' for the side that accepted.
Bytes32 ComputeMac(const AuthKey& key, bool connected_side, const Bytes32& peer_nonce,
                   const Bytes32& own_nonce);

// Constant-time comparison.
bool MacEquals(const Bytes32& a, const Bytes32& b);

}  // namespace dgpt::net
