// Hand-overs that ThreadSanitizer cannot see, made visible to it.
//
// What an executor job makes (outputs, a plugin's state) reaches the next job that uses it
// through actor messages: the job's result goes to its instance actor, which routes the
// outputs to the next stage's actor, which submits the job that reads them. That chain is
// ordered by CAF's mailboxes, but Debian's CAF is not built with ThreadSanitizer, so the
// order is invisible and every payload read by the next stage would look like a race.
// Every job therefore starts with taken() (in the executor) and calls made() before it sends
// its result (in the instance), on one shared sync object: a job that handed its result over
// before another started happened before it, as the runtime guarantees.
// Jobs that overlap are not ordered, so races between them are still found. A data-link
// reader calls made() before it hands decoded frames to an actor. Outside ThreadSanitizer
// builds both are empty.
#pragma once

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace troupe::handover {

#if defined(__SANITIZE_THREAD__)
inline char sync;
/// What this thread made so far is handed to whoever calls taken() next.
inline void made() { __tsan_release(&sync); }
/// This thread takes over what was handed over with made().
inline void taken() { __tsan_acquire(&sync); }
#else
inline void made() {}
inline void taken() {}
#endif

}  // namespace troupe::handover
