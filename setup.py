from setuptools import find_packages, setup

setup(
    name="bilm",
    version="0.2.0",
    description="ELMo's bidirectional language model (biLM) on TensorFlow 2.x",
    url="https://github.com/allenai/bilm-tf",
    packages=find_packages(include=["bilm", "bilm.*"]),
    package_data={"bilm": ["default_model/*"]},
    python_requires=">=3.10",
    install_requires=["tensorflow>=2.16", "h5py", "numpy"],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["bilm=bilm.cli:main"]},
    license="Apache-2.0",
)
