"""A flow as a Mermaid state diagram, generated from the YAML so it cannot go stale."""

from __future__ import annotations

from backend.flows.spec import END, FlowSpec


def _node(name: str) -> str:
    return "[*]" if name == END else name


def mermaid(flow: FlowSpec) -> str:
    lines = ["stateDiagram-v2", f"    %% flow {flow.name}", f"    [*] --> {flow.start}"]
    for step in flow.steps.values():
        if step.call is not None:
            lines.append(f"    {step.name} : call {step.call}")
        elif step.action is not None:
            lines.append(f"    {step.name} : {step.action}")
        for button in step.buttons:
            lines.append(f"    {step.name} --> {_node(button.next)} : {button.id}")
        for branch in step.next:
            label = branch.condition.text if branch.condition else ("answer" if step.ask else "")
            label = label.replace(":", " ").replace('"', "'")
            suffix = f" : {label}" if label else ""
            lines.append(f"    {step.name} --> {_node(branch.target)}{suffix}")
        if step.retry.exhausted is not None:
            lines.append(f"    {step.name} --> {_node(step.retry.exhausted)} : retries exhausted")
    if flow.idle is not None:
        lines.append(f"    note left of {flow.idle.next} : after {flow.idle.after_s}s idle")
    return "\n".join(lines) + "\n"
