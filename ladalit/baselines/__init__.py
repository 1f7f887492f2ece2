"""The methods LaDa is compared with: standalone, FedKD, FedMKT, WASP, SFT-CoT, Socratic-CoT and rStar."""
