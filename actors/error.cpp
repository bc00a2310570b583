#include <troupe/error.hpp>

#include <caf/atom.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace troupe {

caf::error make_error(errc code, std::string text) {
  return caf::error(static_cast<uint8_t>(code), caf::atom("troupe"), caf::make_message(std::move(text)));
}

std::string describe(const caf::error& err) {
  if (!err) return "no error";
  const auto& ctx = err.context();
  if (err.category() == caf::atom("troupe") && ctx.match_elements<std::string>()) return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

std::optional<errc> code_of(const caf::error& err) {
  if (!err || err.category() != caf::atom("troupe")) return std::nullopt;
  return static_cast<errc>(err.code());
}

bool retryable(const caf::error& err) {
  auto c = code_of(err);
  return c == errc::busy || c == errc::no_answer;
}

}  // namespace troupe
