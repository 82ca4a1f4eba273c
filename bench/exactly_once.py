"""The delivery check of a run in which clients sent while the cluster changed under them:
every acknowledged message delivered exactly once, in each sender's order, and nothing
unacknowledged shown twice or anything never sent shown at all.

Pure: it judges what the clients recorded (what each sender sent, in its order, and the
sequence number the service acknowledged, if it did) against what one recipient was shown
(each delivery's seq, sender and text, in the order shown). Senders send one message at a
time, so a sender's sending order is the order its messages must be delivered in.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple


class Sent(NamedTuple):
    text: str
    seq: Optional[int]  # the seq the service acknowledged; None: not acknowledged (outcome unknown)


class Delivered(NamedTuple):
    seq: int
    sender: str
    text: str


class Verdict(NamedTuple):
    acknowledged: int
    unacknowledged: int
    shown: int
    lost: List[str]  # acknowledged, never shown
    duplicated: List[str]  # one message shown under two or more seqs (acknowledged or not)
    shown_twice: List[str]  # one seq shown twice (the session must show each seq once)
    phantom: List[str]  # shown, never sent by that sender
    out_of_order: List[str]  # a sender's message shown before one it sent earlier
    wrong_seq: List[str]  # acknowledged with one seq, shown with another

    @property
    def problems(self) -> List[str]:
        out: List[str] = []
        for name, items in (("lost", self.lost), ("duplicated", self.duplicated),
                            ("shown twice", self.shown_twice), ("phantom", self.phantom),
                            ("out of order", self.out_of_order), ("wrong seq", self.wrong_seq)):
            if items:
                out.append(f"{len(items)} {name}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems


def check_deliveries(sent: Dict[str, Sequence[Sent]], shown: Sequence[Delivered]) -> Verdict:
    """Judge what one recipient was shown against what every sender sent to it."""
    position: Dict[Tuple[str, str], int] = {}  # (sender, text) -> its place in the sender's order
    acknowledged_seq: Dict[Tuple[str, str], int] = {}
    for sender, messages in sent.items():
        for place, message in enumerate(messages):
            position[(sender, message.text)] = place
            if message.seq is not None:
                acknowledged_seq[(sender, message.text)] = message.seq

    seqs_of: Dict[Tuple[str, str], List[int]] = {}
    seen_seqs: Dict[int, Delivered] = {}
    shown_twice: List[str] = []
    phantom: List[str] = []
    for delivery in shown:
        if delivery.seq in seen_seqs:
            shown_twice.append(f"seq {delivery.seq} ({delivery.sender}: {delivery.text!r}, "
                               f"first as {seen_seqs[delivery.seq].sender}: {seen_seqs[delivery.seq].text!r})")
            continue
        seen_seqs[delivery.seq] = delivery
        key = (delivery.sender, delivery.text)
        if key not in position:
            phantom.append(f"{delivery.sender}: {delivery.text!r} (seq {delivery.seq})")
            continue
        seqs_of.setdefault(key, []).append(delivery.seq)

    duplicated = [f"{sender}: {text!r} at seqs {seqs}" for (sender, text), seqs in seqs_of.items() if len(seqs) > 1]
    lost = [f"{sender}: {text!r} (acknowledged as seq {seq})" for (sender, text), seq in acknowledged_seq.items()
            if (sender, text) not in seqs_of]
    wrong_seq = [f"{sender}: {text!r} acknowledged as seq {seq}, shown as {seqs_of[(sender, text)]}"
                 for (sender, text), seq in acknowledged_seq.items()
                 if (sender, text) in seqs_of and seq not in seqs_of[(sender, text)]]

    out_of_order: List[str] = []
    last: Dict[str, Tuple[int, Delivered]] = {}  # sender -> (place, delivery) of its latest by seq
    for seq in sorted(seen_seqs):
        delivery = seen_seqs[seq]
        place = position.get((delivery.sender, delivery.text))
        if place is None:
            continue
        previous = last.get(delivery.sender)
        if previous is not None and previous[0] > place:
            out_of_order.append(f"{delivery.sender}: {delivery.text!r} (seq {seq}) after "
                                f"{previous[1].text!r} (seq {previous[1].seq}), which was sent later")
        if previous is None or place > previous[0]:
            last[delivery.sender] = (place, delivery)

    return Verdict(
        acknowledged=len(acknowledged_seq),
        unacknowledged=len(position) - len(acknowledged_seq),
        shown=len(seen_seqs),
        lost=sorted(lost), duplicated=sorted(duplicated), shown_twice=shown_twice, phantom=phantom,
        out_of_order=out_of_order, wrong_seq=sorted(wrong_seq),
    )
