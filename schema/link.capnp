@0xc3f1a8e27d5b4a90;
# The data link between nodes: frames of a pipeline's edges that cross nodes, their
# acknowledgements, and the pipeline control that must reach every node hosting a part.
#
# A node opens one TCP connection to each peer it sends to (the peer's data address) and
# says Hello; the peer answers HelloReply, refusing another token or protocol version. Then
# each side sends Messages. On the wire each message is
#   magic "TRPL" (4 bytes) | header words (u32) | payload bytes (u64) | header | payload
# where the header is a flat Cap'n Proto Message and the payload section is the frames'
# payloads back to back, in the order of the batch's frames (each LinkFrame has its size).
# Payload bytes are written straight from the frames' buffers and read into one buffer the
# received frames share.
#
# Delivery: a sender numbers each frame it sends on a channel (one channel per pipeline
# stage it feeds on that peer). The receiver acknowledges a number once the stage's
# instance has acknowledged the frame (processed it and handed on its outputs), so an
# acknowledgement is end to end. What is not acknowledged when a connection drops is sent
# again on the next one; the receiver drops a number it holds already, and the instances
# drop frames they have taken (by stream and seq).
#
# Epochs: a pipeline placed across a cluster has a placement record whose revision only
# grows (the cluster's store gives it). A sender stamps each batch and each control message
# with the revision it acts on; a receiver drops, counts and asks again for what a node sends
# under a revision at or below the one at which that node lost a stage (it was taken for
# dead, and the stage runs elsewhere now): such a node must read the new placement first. A
# hello from a node below its fence is refused for the same reason.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const linkProtocol :UInt32 = 2;

struct LinkKeyValue {
  key @0 :Text;
  value @1 :Text;
}

struct LinkFrame {
  id @0 :UInt64;           # the sender's number for it on its channel
  stream @1 :UInt64;
  seq @2 :UInt64;
  part @3 :UInt32;
  generation @4 :UInt64;
  timestampNs @5 :Int64;
  type @6 :Text;
  meta @7 :List(LinkKeyValue);
  size @8 :UInt64;         # bytes of payload, next in the payload section
}

enum ControlKind {
  finished @0;   # a stage finished on the sending node
  end @1;        # drain: the sources end their streams
}

struct LinkMessage {
  union {
    hello :group {
      protocol @0 :UInt32;
      token @1 :Text;
      node @2 :Text;
      incarnation @3 :UInt64;
      epoch @18 :UInt64;   # the newest placement revision the sender acts on (see frames)
    }
    helloReply :group {
      ok @4 :Bool;
      reason @5 :Text;     # why refused
      node @6 :Text;
    }
    frames :group {        # sender -> receiver
      channel @7 :UInt32;
      pipeline @8 :Text;
      stage @9 :Text;      # the receiving stage
      batch @10 :List(LinkFrame);
      epoch @19 :UInt64;   # the revision of the pipeline's placement the sender acts on
    }
    acks :group {          # receiver -> sender, on the same connection
      channel @11 :UInt32;
      acked @12 :List(UInt64);
      retry @13 :List(UInt64);   # not taken (the stage is not served here yet): send later
      reason @14 :Text;
    }
    control :group {       # pipeline control, sender -> receiver
      pipeline @15 :Text;
      what @16 :ControlKind;
      stage @17 :Text;
      epoch @20 :UInt64;   # as for frames
    }
  }
}
