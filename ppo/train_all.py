"""`make train`: placeholder until the PPO trainer lands (issue: ppo)."""

if __name__ == "__main__":
    print("no trainer yet: the fused PPO trainer is being built (see the ppo issue)")
