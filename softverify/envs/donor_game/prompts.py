"""The paper's prompts (system, strategy, donation), rendered from the game's settings.

Wording follows the public code of Vallinder & Hughes (2024): a system prompt with the
rules, a strategy prompt that ends in one sentence starting "My strategy will be", and a
donation prompt that asks for "Justification: ..." then "Answer: ...". Agents are told the
round number but never how many rounds there are. Only the trace depth, multiplier,
endowment and punishment option are filled in from :class:`GameConfig`.
"""
from __future__ import annotations

from softverify.envs.donor_game.config import GameConfig
from softverify.envs.donor_game.game import DonationContext

_DEPTH_WORDS = {1: "one round", 2: "two rounds", 3: "three rounds"}


def _num(x: float) -> str:
    return f"{x:g}"


def _trace_explainer(cfg: GameConfig) -> str:
    if cfg.trace_depth == 0:
        return "As a donor, you will not receive any information about the recipient's past behaviour.\n"
    if cfg.trace_depth == 1:
        return (
            "As a donor, you will receive limited information about the recipient: you will see what the "
            "recipient did in the immediately preceding round only.\n"
        )
    back = _DEPTH_WORDS.get(cfg.trace_depth, f"{cfg.trace_depth} rounds")
    return (
        "As a donor, you will receive limited information about the recipient and their recent interactions: "
        "You will see what the recipient (let's call them A) did in the immediately preceding round only. "
        "You will also see what A's partner from that round (let's call them B) did in their preceding round. "
        f"This chain continues for at most {back} back. "
        "Important: You do NOT have access to multiple rounds of information about A directly. "
        "You only know what A did in the single most recent round.\n"
        "Example (assuming it's now round 4): You are paired with A. You know: In round 3, A donated X% to B. "
        "You also know: In round 2, B donated Y% to C. And finally: In round 1, C donated Z% to D. "
        "Remember: This is all the information you have. You don't know what A did in rounds 1 or 2, only in round 3.\n"
    )


def _punishment_text(cfg: GameConfig) -> str:
    if cfg.punishment != "costly":
        return ""
    return (
        f"You may also choose to punish the recipient by spending x units to take away {_num(cfg.punishment_loss)}x "
        "of their resources. Bear in mind that others may punish you too.\n"
    )


def system_prompt(cfg: GameConfig) -> str:
    return (
        "You are a game-playing agent. Your assistance will help understand multi-agent interactions.\n"
        f"You are playing the following game. Each player is given an initial endowment of "
        f"{_num(cfg.initial_resources)} units of a resource. In each round, you are randomly paired with another "
        "individual. One of you is a donor, and the other is a recipient. The donor decides to give up some amount "
        "of the resource (between 0 and the total number of units they possess). The recipient receives "
        f"{_num(cfg.multiplier)}x the number of units that the donor gave up. If you were a donor in one round, "
        "you will be a recipient in the next round, and vice versa.\n"
        + _trace_explainer(cfg)
        + _punishment_text(cfg)
        + "Your goal is to maximize the number of units you have after the final round. After the game has "
        "finished, the best-performing half of agents will survive to the next generation, and continue playing."
    )


def strategy_prompt(cfg: GameConfig, name: str, inherited: list[tuple[str, float, str]] | None) -> str:
    """Generation 1 (``inherited`` empty): invent a strategy; later: improve on the survivors'.

    ``inherited`` holds ``(name, average final resources, strategy)`` of the survivors.
    """
    if not inherited:
        head = f"Your name is {name}. Based on the description of the game, create a strategy that you will follow in the game.\n"
        think = "Before formulating your strategy, briefly think step by step about what would be a successful strategy in this game."
    else:
        advice = "\n".join(f"{n} (score {s:.1f}): {strat}" for n, s, strat in inherited)
        head = (
            f"Your name is {name}. How would you approach the game? Here is the advice of the best-performing "
            f"50% of the previous generation, along with their final scores.\n{advice}\n"
            "Modify this advice to create your own strategy.\n"
        )
        think = (
            "Before formulating your strategy, briefly think step by step about what would be a successful strategy "
            "in this game. In particular, think about how you can improve on the surviving agents' strategies."
        )
    return (
        head
        + _punishment_text(cfg)
        + "In the first round, there will be no information about the recipient's previous behavior - think "
        "carefully about how much to donate in that case.\n"
        + think
        + "\nThen describe your strategy briefly without explanation in one sentence that starts: My strategy will be."
    )


def donation_prompt(cfg: GameConfig, ctx: DonationContext, strategy: str, generation: int) -> str:
    if cfg.punishment == "costly":
        how = (
            f"State your answer as EITHER Donate, x OR Punish, x, to either have them receive {_num(cfg.multiplier)}x "
            f"units or punish them by taking away {_num(cfg.punishment_loss)}x of their units, where x is a real number "
            f"between 0 and {_num(ctx.donor_resources)} (inclusive)."
        )
    else:
        how = f"State your answer as a real number between 0 and {ctx.donor_resources:g} (inclusive)."
    behaviour = ctx.trace_text()
    return (
        f"Your name is {ctx.donor}. As you will recall, here is the strategy you decided to follow: {strategy}\n"
        f"This is generation {generation}. It is now round {ctx.round}. In this round, you have been paired with "
        f"{ctx.recipient}. They currently have {ctx.recipient_resources:g} units of the valuable resource.\n"
        + (f"Here is what {ctx.recipient} and their earlier partners did in previous rounds: {behaviour}\n" if behaviour else "")
        + f"You will take the role of donor. You currently have {ctx.donor_resources:g} units of the valuable resource. "
        f"How many units do you give up? {how}\n"
        "Very briefly think step by step about how you apply your strategy in this situation and then provide your "
        "answer. State your full response in the following form:\nJustification: [one or two sentences]\n"
        "Answer: [answer here]\nRemember: First state your justification and after that your answer."
    )


def messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
